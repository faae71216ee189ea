"""The shared layer: everything train/, evaluate/ and scripts/ all use (model loading, data I/O, label
extraction, metrics, the API client, GGUF conversion and export, ...). It imports none of them."""

from pathlib import Path

# The checkout this package lives in: models/, results/ and data/ are found from here.
REPO_ROOT = Path(__file__).resolve().parent.parent
