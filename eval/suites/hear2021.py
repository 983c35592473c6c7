"""The 19 HEAR 2021 leaderboard tasks as released (hear-2021.0.6 task folders, 16 kHz): what each folder must hold.

Facts come from the task configs of hearbenchmark/hear-preprocess (``hearpreprocess/*.py`` and
``hearpreprocess/secrettasks/hearsecrettasks/*.py``, read 2026-12-07 with the project's code search; every task
names its file in ``source``) and from the datasets' own descriptions where a config quotes them. A released
folder is named ``<task_name>-<version>-<mode>`` (hear-preprocess ``FinalizeCorpus.versioned_task_name``) and its
``task_metadata.json`` is the task config itself.

Clip counts: ``clips`` holds only counts a source states (a config comment such as "5.0 * 5720"); ``None``
with ``clips_note`` saying why where no readable source gives the count. ``replica_clips`` are the counts
replicas use (eval/replica.py) - for unverified splits an estimate, derived as ``clips_note`` says; they are
never used to judge a real folder.

``check_task`` compares a task folder with its entry (metadata, vocabulary size, verified clip counts) and
returns every mismatch; ``suite_report`` does it for a tasks directory and lists the missing tasks with where
to download them.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from eval.tasks import TaskError, load_task

SAMPLE_RATE = 16000
RELEASE = "hear-2021.0.6"
DOWNLOAD = ("HEAR 2021 task archives (https://hearbenchmark.com/hear-tasks.html): 16 kHz in the requester-pays "
            "bucket folder gs://hear2021-archive/tasks/16000/ (gsutil -u YOUR_GCP_PROJECT -m cp -r ...), 48 kHz on "
            "Zenodo (DOI 10.5281/zenodo.6332517, hear2021-<folder>-48000.tar.gz; resample to 16 kHz); untar so that "
            "--tasks-dir/<folder>/task_metadata.json exists")
PREPROCESS = "hearbenchmark/hear-preprocess"
SECRET = f"{PREPROCESS} hearpreprocess/secrettasks/hearsecrettasks"
MAESTRO_EVALUATION_PARAMS = {
    "event_postprocessing_grid": {"median_filter_ms": [150], "min_duration": [50]},
    "task_specific_param_grid": {"max_epochs": [50], "check_val_every_n_epoch": [1]},
}
SCENE_METRICS = ("top1_acc", "mAP", "d_prime", "aucroc")


def _folds(n: int) -> tuple[str, ...]:
    return tuple(f"fold{i:02d}" for i in range(n))


def _even(total: int, splits: tuple[str, ...]) -> dict[str, int]:
    """``total`` clips dealt over ``splits`` as evenly as possible (first splits get the remainder)."""
    base, extra = divmod(total, len(splits))
    return {split: base + (index < extra) for index, split in enumerate(splits)}


@dataclass(frozen=True)
class SuiteTask:
    """One leaderboard task. ``clips``: verified clips per split (None = no readable source); ``clips_total``:
    verified total over splits (None = unknown); ``sample_duration`` in seconds (None: clips vary in length)."""

    column: str  # leaderboard column, as in the official leaderboard.csv
    task_name: str
    version: str
    mode: str
    embedding_type: str
    prediction_type: str
    split_mode: str
    splits: tuple[str, ...]
    evaluation: tuple[str, ...]  # first = primary metric (the leaderboard score)
    sample_duration: float | None
    n_labels: int | None
    clips: dict[str, int | None]
    clips_total: int | None
    clips_note: str
    replica_clips: dict[str, int]
    source: str
    labels: tuple[str, ...] = ()  # label names where the config lists them; empty: replicas use label000...
    evaluation_params: dict = field(default_factory=dict)
    use_scoring_for_early_stopping: bool = True
    replica_durations: tuple[float, ...] = ()  # clip lengths replicas cycle through when sample_duration is None

    @property
    def folder(self) -> str:
        return f"{self.task_name}-{self.version}-{self.mode}"

    @property
    def primary_metric(self) -> str:
        return self.evaluation[0]

    def replica_counts(self, scale: float) -> dict[str, int]:
        """Clips per split of a replica at ``scale``: ``replica_clips`` x scale, at least one per split."""
        if not scale > 0:
            raise ValueError(f"replica scale must be > 0, got {scale}")
        return {split: max(1, round(self.replica_clips[split] * scale)) for split in self.splits}

    def metadata(self) -> dict:
        """The fields of ``task_metadata.json`` heareval and this harness read, as the release writes them."""
        metadata = {"task_name": self.task_name, "version": self.version, "mode": self.mode,
                    "embedding_type": self.embedding_type, "prediction_type": self.prediction_type,
                    "split_mode": self.split_mode, "splits": list(self.splits), "sample_duration": self.sample_duration,
                    "evaluation": list(self.evaluation)}
        if self.split_mode != "trainvaltest":
            metadata["nfolds"] = len(self.splits)
        if self.evaluation_params:
            metadata["evaluation_params"] = self.evaluation_params
        if not self.use_scoring_for_early_stopping:
            metadata["use_scoring_for_early_stopping"] = False
        return metadata


def _kfold(column, task_name, version, n_folds, duration, n_labels, total, total_note, source, *, labels=(),
           evaluation=SCENE_METRICS, split_mode="new_split_kfold") -> SuiteTask:
    folds = _folds(n_folds)
    return SuiteTask(
        column=column, task_name=task_name, version=version, mode="full", embedding_type="scene",
        prediction_type="multiclass", split_mode=split_mode, splits=folds, evaluation=evaluation,
        sample_duration=duration, n_labels=n_labels, clips={fold: None for fold in folds}, clips_total=total,
        clips_note=f"total {total} ({total_note}); per fold not stated, replicas deal the total evenly",
        replica_clips=_even(total, folds), source=source, labels=labels)


TRAINVALTEST = ("train", "valid", "test")
PITCHES = tuple(str(pitch) for pitch in range(21, 109))  # hear-preprocess keeps MIDI pitches 21..108
NSYNTH_NOTE = ("no readable source states the counts: the 5h/50h caps (train 3/4, valid 1/4, test 1/4 of 5 h or 50 h "
               "of 4 s clips) depend on hear-preprocess's SubsampleSplit version and on the NSynth split sizes; "
               "replicas use cap / 4 s")


def _nsynth(column: str, hours: int) -> SuiteTask:
    train, held_out = int(3600 * hours * 3 / 4 / 4), int(3600 * hours / 4 / 4)
    return SuiteTask(
        column=column, task_name="nsynth_pitch", version="v2.2.3", mode=f"{hours}h", embedding_type="scene",
        prediction_type="multiclass", split_mode="trainvaltest", splits=TRAINVALTEST,
        evaluation=("pitch_acc", "chroma_acc"), sample_duration=4.0, n_labels=88,
        clips=dict.fromkeys(TRAINVALTEST), clips_total=None, clips_note=NSYNTH_NOTE,
        replica_clips={"train": train, "valid": held_out, "test": held_out}, labels=PITCHES,
        source=f"{PREPROCESS} hearpreprocess/nsynth_pitch.py (modes 5h/50h, pitch_range 21..108)")


SPEECH_WORDS = ("down", "go", "left", "no", "off", "on", "right", "stop", "up", "yes", "_silence_", "_unknown_")
SPEECH_SOURCE = f"{PREPROCESS} hearpreprocess/speech_commands.py (WORDS + _silence_ + _unknown_, 1 s clips)"

TASKS: tuple[SuiteTask, ...] = (
    SuiteTask(
        column="Beehive", task_name="beehive_states_fold0", version="v2", mode="full", embedding_type="scene",
        prediction_type="multiclass", split_mode="trainvaltest", splits=TRAINVALTEST,
        evaluation=("aucroc", "mAP", "d_prime", "top1_acc"), sample_duration=600.0, n_labels=2,
        clips=dict.fromkeys(TRAINVALTEST), clips_total=576,
        clips_note="576 files in all (config comment '576 * 600'); test = hive 3, train/valid = hive 1, per-hive "
                   "counts not stated; replicas split 60/20/20",
        replica_clips={"train": 346, "valid": 115, "test": 115}, labels=("NOQUEEN", "QUEEN"),
        source=f"{SECRET}/beehive_states_fold0.py"),
    _kfold("Beijing Opera", "beijing_opera", "v1.0-hear2021", 5, 4.77, 4, 236, "config comment '236 * 4.77'",
           f"{SECRET}/beijing_opera.py; 4 instrument classes (bangu, naobo, daluo, xiaoluo) per the dataset record "
           "zenodo 1285212 and the HEAR paper", labels=("bangu", "daluo", "naobo", "xiaoluo")),
    _kfold("CREMA-D", "tfds_crema_d", "1.0.0", 5, 5.0, 6, 7438, "config comment '1488 or 1487 samples per fold': "
           "3 x 1488 + 2 x 1487", f"{SECRET}/tfds_crema_d.py; 6 emotions (CREMA-D)",
           labels=("ANG", "DIS", "FEA", "HAP", "NEU", "SAD")),
    SuiteTask(
        column="DCASE 2016", task_name="dcase2016_task2", version="hear2021", mode="full", embedding_type="event",
        prediction_type="multilabel", split_mode="trainvaltest", splits=TRAINVALTEST,
        evaluation=("event_onset_200ms_fms", "segment_1s_er"), sample_duration=120.0, n_labels=11,
        clips={"train": 9, "valid": 9, "test": None}, clips_total=None,
        clips_note="train/valid: the 9 + 9 dev stems listed in the config; test (DCASE 2016 task 2 public test "
                   "set) not counted in any source read here; replicas use 54 (unverified estimate)",
        replica_clips={"train": 9, "valid": 9, "test": 54},
        labels=("clearthroat", "cough", "doorslam", "drawer", "keyboard", "keys", "knock", "laughter", "pageturn",
                "phone", "speech"),
        source=f"{PREPROCESS} hearpreprocess/dcase2016_task2.py (11 office sound classes of DCASE 2016 task 2)"),
    _kfold("ESC-50", "esc50", "v2.0.0", 5, 5.0, 50, 2000, "ESC-50: 40 clips x 50 classes in 5 predefined folds",
           f"{SECRET}/esc50.py (presplit_kfold on ESC-50's folds)", split_mode="presplit_kfold"),
    SuiteTask(
        column="FSD50k", task_name="fsd50k", version="v1.0", mode="full", embedding_type="scene",
        prediction_type="multilabel", split_mode="trainvaltest", splits=TRAINVALTEST,
        evaluation=("mAP", "d_prime", "aucroc", "top1_acc"), sample_duration=None, n_labels=200,
        clips={"train": None, "valid": None, "test": 10231}, clips_total=51185,
        clips_note="test = FSD50K eval (10231 clips); train + valid = FSD50K dev (40966) minus the 12 too-long "
                   "files the config drops = 40954, split by FSD50K's own train/val column (36796 / 4170 in the "
                   "FSD50K paper, arXiv 2010.00475) - which split lost the 12 is not stated; replicas take it "
                   "from train",
        replica_clips={"train": 36784, "valid": 4170, "test": 10231},
        replica_durations=(0.5, 2.0, 5.0, 8.0, 10.0, 20.0),  # 0.3-30 s, mean 7.6 s (FSD50K paper: about 108 h)
        source=f"{SECRET}/fsd50k.py (200 AudioSet-ontology classes, sample_duration None: 0.3-30 s clips)"),
    _kfold("GTZAN Genre", "tfds_gtzan", "1.0.0", 10, 30.0, 10, 1000, "config comment '30.0*1000 seconds'",
           f"{SECRET}/tfds_gtzan.py (10 genres)",
           labels=("blues", "classical", "country", "disco", "hiphop", "jazz", "metal", "pop", "reggae", "rock")),
    _kfold("GTZAN Music/Speech", "tfds_gtzan_music_speech", "1.0.0", 10, 30.0, 2, 120,
           "config comment '30.0*120 seconds'", f"{SECRET}/tfds_gtzan_music_speech.py", labels=("music", "speech")),
    _kfold("Gunshot", "gunshot_triangulation", "v1.0", 7, 1.5, 4, 88,
           "4 microphones x 22 shots, one fold per firearm (config); fold sizes 16 or 12",
           f"{SECRET}/gunshot_triangulation.py (label = microphone)", labels=("mic1", "mic2", "mic3", "mic4")),
    _kfold("Libricount", "libricount", "v1.0.0-hear2021", 5, 5.0, 11, 5720, "config comment '5.0 * 5720'",
           f"{SECRET}/libricount.py (0-10 speakers)", labels=tuple(str(n) for n in range(11))),
    SuiteTask(
        column="Maestro 5h", task_name="maestro", version="v3.0.0", mode="5h", embedding_type="event",
        prediction_type="multilabel", split_mode="new_split_kfold", splits=_folds(5),
        evaluation=("event_onset_50ms_fms", "event_onset_offset_50ms_20perc_fms"), sample_duration=120.0,
        n_labels=88, clips=dict.fromkeys(_folds(5)), clips_total=None,
        clips_note="max_task_duration_by_fold = 3600 * 5 / 4 s of 120 s clips: at most 37 per fold; the per-fold "
                   "subsampling code was not read, replicas use 37",
        replica_clips=dict.fromkeys(_folds(5), 37), labels=PITCHES,
        evaluation_params=MAESTRO_EVALUATION_PARAMS, use_scoring_for_early_stopping=False,
        source=f"{SECRET}/maestro.py (piano notes, MIDI 21..108)"),
    _kfold("Mridangam Stroke", "mridangam_stroke", "v1.5", 5, 0.81, 10, 6977, "config comment '0.81 * 6977'",
           f"{SECRET}/mridangam_stroke.py",
           labels=("bheem", "cha", "dheem", "dhin", "num", "ta", "tha", "tham", "thi", "thom")),
    _kfold("Mridangam Tonic", "mridangam_tonic", "v1.5", 5, 0.81, 6, 6977, "the mridangam_stroke corpus",
           f"{SECRET}/mridangam_tonic.py (the stroke config, tonic labels)",
           labels=("b", "c", "csh", "d", "dsh", "e")),
    _nsynth("NSynth Pitch 50h", 50),
    _nsynth("NSynth Pitch 5h", 5),
    SuiteTask(
        column="Speech commands 5h", task_name="speech_commands", version="v0.0.2", mode="5h",
        embedding_type="scene", prediction_type="multiclass", split_mode="trainvaltest", splits=TRAINVALTEST,
        evaluation=("top1_acc",), sample_duration=1.0, n_labels=12, clips=dict.fromkeys(TRAINVALTEST),
        clips_total=None,
        clips_note="train + valid capped at 5 h of 1 s clips (3:1), test = the whole v0.02 test set (config "
                   "comment: 1.33 h); exact counts not stated; replicas use 13500 / 4500 / 4890",
        replica_clips={"train": 13500, "valid": 4500, "test": 4890}, labels=SPEECH_WORDS, source=SPEECH_SOURCE),
    SuiteTask(
        column="Speech commands full", task_name="speech_commands", version="v0.0.2", mode="full",
        embedding_type="scene", prediction_type="multiclass", split_mode="trainvaltest", splits=TRAINVALTEST,
        evaluation=("top1_acc",), sample_duration=1.0, n_labels=12, clips=dict.fromkeys(TRAINVALTEST),
        clips_total=None,
        clips_note="every v0.02 clip plus 1 s silence slices of the background noise (config); counts not stated "
                   "in any source read here; replicas use TFDS speech_commands' split sizes 85511 / 10102 / 4890 "
                   "(unverified estimate)",
        replica_clips={"train": 85511, "valid": 10102, "test": 4890}, labels=SPEECH_WORDS, source=SPEECH_SOURCE),
    SuiteTask(
        column="Vocal Imitation", task_name="vocal_imitation", version="v1.1.3", mode="full", embedding_type="scene",
        prediction_type="multiclass", split_mode="new_split_kfold", splits=_folds(3),
        evaluation=("mAP", "d_prime", "aucroc", "top1_acc"), sample_duration=11.26, n_labels=None,
        clips=dict.fromkeys(_folds(3)), clips_total=5601,
        clips_note="total 5601 (config comment '11.26 * 5601'); per fold not stated; the label count (reference "
                   "sounds imitated) is not stated in the config - replicas use 302 (unverified estimate)",
        replica_clips=_even(5601, _folds(3)), source=f"{SECRET}/vocal_imitation.py (label = reference sound)"),
    _kfold("VoxLingua107 top 10", "vox_lingua_top10", "hear2021", 5, 18.64, 10, 972,
           "config comment '18.64 * 972'", f"{SECRET}/vox_lingua_top10.py (10 most frequent languages)"),
)
REPLICA_LABELS_WHEN_UNKNOWN = {"vocal_imitation": 302}
BY_NAME = {task.folder: task for task in TASKS}
BY_COLUMN = {task.column: task for task in TASKS}


def lookup(name: str) -> SuiteTask:
    """A task by folder name, leaderboard column or (when unambiguous) task_name."""
    if name in BY_NAME:
        return BY_NAME[name]
    if name in BY_COLUMN:
        return BY_COLUMN[name]
    matches = [task for task in TASKS if task.task_name == name]
    if len(matches) == 1:
        return matches[0]
    hint = f"; {name!r} names several: {[t.folder for t in matches]}" if matches else ""
    raise ValueError(f"unknown HEAR 2021 task {name!r}{hint}; known: {sorted(BY_NAME)}")


def match_folder(folder: Path) -> SuiteTask | None:
    """The registry entry of a task folder, by its task_name / version / mode (else its folder name)."""
    try:
        metadata = json.loads((folder / "task_metadata.json").read_text())
        key = f"{metadata['task_name']}-{metadata['version']}-{metadata['mode']}"
    except (OSError, ValueError, KeyError, TypeError):
        key = folder.name
    return BY_NAME.get(key) or BY_NAME.get(folder.name)


def check_task(folder: Path, entry: SuiteTask) -> list[str]:
    """Every difference between a task folder and its registry entry (metadata, label count, verified clip counts)."""
    try:
        task = load_task(folder)
    except TaskError as error:
        return [str(error)]
    problems = []
    expected = entry.metadata()
    for key in ("task_name", "embedding_type", "prediction_type", "split_mode", "splits", "evaluation",
                "sample_duration"):
        if task.metadata.get(key) != expected[key]:
            problems.append(f"{key}: folder has {task.metadata.get(key)!r}, {RELEASE} has {expected[key]!r}")
    if entry.n_labels is not None and len(task.label_vocab) != entry.n_labels:
        problems.append(f"labelvocabulary.csv: {len(task.label_vocab)} labels, {RELEASE} has {entry.n_labels}")
    counts = {}
    for split in task.splits:
        path = folder / f"{split}.json"
        counts[split] = len(json.loads(path.read_text())) if path.is_file() else 0
    scale = task.metadata.get("replica_scale")
    if scale is not None:  # a replica (eval/replica.py): every split must hold its scaled count
        expected_clips, total, origin = entry.replica_counts(float(scale)), None, f"a replica at scale {scale}"
    else:
        expected_clips, total, origin = entry.clips, entry.clips_total, RELEASE
    for split, expected_count in expected_clips.items():
        if expected_count is not None and counts.get(split) != expected_count:
            problems.append(f"{split}.json: {counts.get(split)} clips, {origin} has {expected_count}")
    if total is not None and sum(counts.values()) != total:
        problems.append(f"{sum(counts.values())} clips over all splits, {origin} has {total}")
    return [f"{folder.name}: {problem}" for problem in problems]


@dataclass
class SuiteReport:
    """present: folder → registry entry; problems: mismatches (one line each); missing: entries with no folder."""

    present: dict[Path, SuiteTask]
    problems: list[str]
    missing: list[SuiteTask]
    unknown: list[Path]

    def text(self) -> str:
        lines = [f"HEAR 2021 suite: {len(self.present)} of {len(TASKS)} tasks present"]
        lines += [f"  mismatch: {problem}" for problem in self.problems]
        lines += [f"  not a HEAR 2021 leaderboard task (run anyway): {path.name}" for path in self.unknown]
        lines += [f"  missing: {entry.folder} ({entry.column})" for entry in self.missing]
        if self.missing:
            lines.append(f"  download the missing ones from the {DOWNLOAD}")
        return "\n".join(lines)


def suite_report(folders: list[Path]) -> SuiteReport:
    """Match task folders to the registry and check each; list the registry tasks no folder provides."""
    present, problems, unknown = {}, [], []
    for folder in folders:
        entry = match_folder(folder)
        if entry is None:
            unknown.append(folder)
            continue
        present[folder] = entry
        problems += check_task(folder, entry)
    found = {entry.folder for entry in present.values()}
    return SuiteReport(present=present, problems=problems, missing=[t for t in TASKS if t.folder not in found],
                       unknown=unknown)
