"""The data sets: the card's front.

Five tasks (thucnews, weibo, moods, hotel, reviews) read from a data directory (`--data-dir`, else
$TIG_DATA_DIR, else ./data), deduplicated before a deterministic stratified 80/10/10 split (THUCNews
keeps its published split). The code lives in the installable package: `tig.load_task` (tig/dataset.py).
"""
from tig.dataset import TASKS, TaskData, LabelledTexts, load_task, resolve_data_dir  # noqa: F401
