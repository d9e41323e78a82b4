"""Ship a finished ShapesWorld recipe run as the package's embedded default model.

    python scripts/ship_default_model.py runs/recipe

copies RUN's final bundle to simplear/assets/default/ (refusing more than 25 MiB) and its model
card with pictures to docs/default-model.md + docs/images/default-model/. Run from the repo root.
"""

import argparse
import json
from pathlib import Path

from simplear.train.model_card import ship_bundle

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="recipe folder (simplear recipe shapes --out RUN)")
    args = parser.parse_args()
    repo = Path(__file__).resolve().parent.parent
    print(json.dumps(ship_bundle(args.run, repo / "simplear" / "assets" / "default", repo / "docs")))
