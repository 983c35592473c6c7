"""heareval's metrics: scene scores on probability matrices, event scores on event lists.

Every function returns ``{metric: value, ...}`` with the metric's own name first (the primary value) and,
for event metrics, the sub-scores heareval also logs (``<metric>_precision``, ``<metric>_recall``).
Values follow heareval 2021.1.3 exactly, corner cases included:
- d_prime / aucroc are NaN when a class has no positive or no negative example (scikit-learn raises);
  d_prime is +inf when a class is perfectly separated (AUC = 1).
- event F-measures follow sed_eval: precision is NaN when no event is predicted, recall is NaN when the
  reference has no event, F = 0 when precision = recall = 0, otherwise NaN propagates.

The event-based F-measures are computed here with the same per-file, per-label maximum bipartite matching as
sed_eval's default ("optimal") matching, vectorised with numpy/scipy, and ``segment_1s_er`` from sed_eval's 1 s
event rolls built with numpy. sed_eval itself is needed only by the tests that check these against it.
"""
from __future__ import annotations

import math

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.stats import norm
from sklearn.metrics import average_precision_score, roc_auc_score

SCENE_METRICS = ("top1_acc", "pitch_acc", "chroma_acc", "mAP", "d_prime", "aucroc")
EVENT_METRICS = (
    "event_onset_200ms_fms",
    "event_onset_50ms_fms",
    "event_onset_offset_50ms_20perc_fms",
    "segment_1s_er",
)
# onset collar (s), whether offsets are checked, offset collar as a fraction of the reference length
_EVENT_F_PARAMS = {
    "event_onset_200ms_fms": (0.2, False, 0.0),
    "event_onset_50ms_fms": (0.05, False, 0.0),
    "event_onset_offset_50ms_20perc_fms": (0.05, True, 0.2),
}

Events = dict[str, list[dict]]  # {filename: [{"label": str, "start": ms, "end": ms}, ...]}


def maximize(metric: str) -> bool:
    """Whether a larger value of ``metric`` is better (False only for error rates)."""
    check_metric(metric)
    return not metric.endswith("_er")


def check_metric(metric: str) -> None:
    if metric not in SCENE_METRICS + EVENT_METRICS:
        raise ValueError(f"unknown metric {metric!r}; known: {', '.join(SCENE_METRICS + EVENT_METRICS)}")


def scene_score(metric: str, probs: np.ndarray, targets: np.ndarray) -> dict[str, float]:
    """Score one scene metric. probs: (n, n_labels) probabilities; targets: (n, n_labels) one/multi-hot."""
    check_metric(metric)
    if metric not in SCENE_METRICS:
        raise ValueError(f"{metric!r} is an event metric; scene predictions cannot be scored with it")
    if probs.ndim != 2 or probs.shape != targets.shape:
        raise ValueError(f"{metric}: probs {probs.shape} and targets {targets.shape} must be equal (n, n_labels)")
    if metric in ("top1_acc", "pitch_acc", "chroma_acc"):
        predicted, target = probs.argmax(axis=1), targets.argmax(axis=1)
        if metric == "chroma_acc":  # octave errors forgiven
            predicted, target = predicted % 12, target % 12
        return {metric: float(np.mean(predicted == target))}
    if metric == "mAP":
        return {metric: float(average_precision_score(targets, probs, average="macro"))}
    try:
        if metric == "aucroc":
            return {metric: float(roc_auc_score(targets, probs, average="macro"))}
        auc = roc_auc_score(targets, probs, average=None)
    except ValueError:  # a class without positives or negatives, as heareval
        return {metric: math.nan}
    with np.errstate(divide="ignore"):
        return {metric: float(np.mean(norm.ppf(auc) * np.sqrt(2.0)))}


def _matched_pairs(ref: np.ndarray, est: np.ndarray, collar: float, offset: bool, fraction: float) -> int:
    """Size of the maximum matching between reference and estimated events of one file.

    ref, est: (n, 3) float64 rows (label index, onset s, offset s). A pair may match when the labels are equal,
    |onset difference| <= collar and, if ``offset``, |offset difference| <= max(collar, fraction * ref length).
    """
    if len(ref) == 0 or len(est) == 0:
        return 0
    hit = (ref[:, None, 0] == est[None, :, 0]) & (np.abs(ref[:, None, 1] - est[None, :, 1]) <= collar)
    if offset:
        offset_collar = np.maximum(collar, fraction * (ref[:, 2] - ref[:, 1]))
        hit &= np.abs(ref[:, None, 2] - est[None, :, 2]) <= offset_collar[:, None]
    rows, cols = np.nonzero(hit.any(axis=1))[0], np.nonzero(hit.any(axis=0))[0]
    if len(rows) == 0:
        return 0
    sub = hit[np.ix_(rows, cols)]
    r, c = linear_sum_assignment(sub, maximize=True)  # maximum-cardinality matching on a 0/1 matrix
    return int(sub[r, c].sum())


def _as_rows(events: list[dict], label_to_idx: dict[str, int]) -> np.ndarray:
    """Events (ms) → (n, 3) rows (label index, onset s, offset s), times converted exactly as heareval does."""
    rows = [(label_to_idx.get(str(e["label"]), -1), e["start"] / 1000.0, e["end"] / 1000.0) for e in events]
    return np.asarray(rows, dtype=np.float64).reshape(-1, 3)


def _f_measure(n_tp: int, n_sys: int, n_ref: int) -> tuple[float, float, float]:
    """(F, precision, recall) exactly as sed_eval.metric computes them."""
    precision = math.nan if n_sys == 0 else n_tp / n_sys
    recall = math.nan if n_ref == 0 else n_tp / n_ref
    if precision == 0 and recall == 0:
        return 0.0, precision, recall
    return 2 * precision * recall / (precision + recall), precision, recall


def event_score(
    metric: str, predicted: Events, reference: Events, label_vocab: list[str]
) -> dict[str, float]:
    """Score one event metric. Like heareval, only files present in ``predicted`` are evaluated."""
    check_metric(metric)
    if metric not in EVENT_METRICS:
        raise ValueError(f"{metric!r} is a scene metric; event lists cannot be scored with it")
    missing = [f for f in predicted if f not in reference]
    if missing:
        raise ValueError(f"{metric}: {len(missing)} predicted files have no reference entry, e.g. {missing[0]!r}")
    if metric == "segment_1s_er":
        return _segment_error_rate(predicted, reference, label_vocab)
    collar, offset, fraction = _EVENT_F_PARAMS[metric]
    label_to_idx = {str(label): i for i, label in enumerate(label_vocab)}
    n_tp = n_sys = n_ref = 0
    for filename, events in predicted.items():
        est, ref = _as_rows(events, label_to_idx), _as_rows(reference[filename], label_to_idx)
        n_sys, n_ref = n_sys + len(est), n_ref + len(ref)
        n_tp += _matched_pairs(ref, est, collar, offset, fraction)
    f, precision, recall = _f_measure(n_tp, n_sys, n_ref)
    return {metric: f, f"{metric}_precision": precision, f"{metric}_recall": recall}


def _segment_rolls(
    predicted: Events, reference: Events, label_to_idx: dict[str, int], resolution: float
) -> tuple[np.ndarray, np.ndarray]:
    """Activity of every 1 s segment of every predicted file, as sed_eval's event rolls, files one after another.

    A file has ceil(max(last reference offset, last estimated offset, 0) / resolution) segments; an event marks
    segments floor(onset) .. ceil(offset) - 1 of its label. Returns (reference, estimated), each
    (n_segments_total, n_labels) bool.
    """
    rows_ref, rows_est, lengths = [], [], []
    for filename, events in predicted.items():
        ref, est = _as_rows(reference[filename], label_to_idx), _as_rows(events, label_to_idx)
        for rows, name in ((ref, "reference"), (est, "predicted")):
            if (rows[:, 0] < 0).any():
                bad = next(e["label"] for e in (reference[filename] if name == "reference" else events)
                           if str(e["label"]) not in label_to_idx)
                raise ValueError(f"segment_1s_er: {name} event label {bad!r} in {filename!r} is not in the "
                                 f"label vocabulary {list(label_to_idx)}")
            if (rows[:, 1:] < 0).any() or not np.isfinite(rows[:, 1:]).all():
                raise ValueError(f"segment_1s_er: {name} events of {filename!r} have negative or non-finite times")
        last = max([0.0, *ref[:, 2], *est[:, 2]])
        lengths.append(int(math.ceil(last / resolution)))
        rows_ref.append(ref)
        rows_est.append(est)
    first_segment = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    n_labels = len(label_to_idx)

    def roll(per_file: list[np.ndarray]) -> np.ndarray:
        edges = np.zeros((first_segment[-1] + 1, n_labels), dtype=np.int64)  # +1 at start, -1 after the end
        for rows, base in zip(per_file, first_segment[:-1]):
            labels = rows[:, 0].astype(np.int64)
            begin = np.floor(rows[:, 1] / resolution).astype(np.int64)
            end = np.ceil(rows[:, 2] / resolution).astype(np.int64)
            keep = end > begin  # an event ending before it starts marks nothing, as a numpy slice
            np.add.at(edges, (base + begin[keep], labels[keep]), 1)
            np.add.at(edges, (base + end[keep], labels[keep]), -1)
        return np.cumsum(edges[:-1], axis=0) > 0

    return roll(rows_ref), roll(rows_est)


def _segment_error_rate(predicted: Events, reference: Events, label_vocab: list[str]) -> dict[str, float]:
    """sed_eval's overall segment-based error rate on 1 s segments, files evaluated one by one as heareval does.

    Per segment: S = min(N_ref, N_sys) - N_tp, D = max(0, N_ref - N_sys), I = max(0, N_sys - N_ref);
    ER = (ΣS + ΣD + ΣI) / ΣN_ref, each term divided by (ΣN_ref + eps) as sed_eval does.
    """
    label_to_idx = {str(label): i for i, label in enumerate(label_vocab)}
    ref, est = _segment_rolls(predicted, reference, label_to_idx, resolution=1.0)
    n_ref, n_sys, n_tp = ref.sum(axis=1), est.sum(axis=1), (ref & est).sum(axis=1)
    substitutions = int(np.sum(np.minimum(n_ref, n_sys) - n_tp))
    deletions, insertions = int(np.sum(np.maximum(0, n_ref - n_sys))), int(np.sum(np.maximum(0, n_sys - n_ref)))
    total, eps = int(n_ref.sum()), np.spacing(1)
    rate = float(substitutions / (total + eps)) + float(deletions / (total + eps)) + float(insertions / (total + eps))
    return {"segment_1s_er": rate}
