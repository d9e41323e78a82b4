"""HTTP serving: an OpenAI-compatible image API with dynamic batching, and the web page.

`create_app(pipeline, ServerConfig(...))` (app.py) builds the FastAPI app; `Batcher` (batching.py)
gathers concurrent requests into sampler batches; errors.py makes every failure an OpenAI-style
error body; run.py serves the app with uvicorn (`simplear serve`). Importing this package does
not import FastAPI: the `serve` extra is needed only by the modules that use it.
"""
