"""Metrics and event post-processing on hand-computed cases, and every event metric against sed_eval."""
from __future__ import annotations

import math

import numpy as np
import pytest

from eval.events import frame_layout, frames_to_events, postprocessing_grid
from eval.features import SplitFeatures
from eval.score import EVENT_METRICS, event_score, maximize, scene_score

VOCAB = ["x", "y"]


def one_hot(indices: list[int], n: int) -> np.ndarray:
    return np.eye(n, dtype=np.float32)[indices]


def test_top1_and_chroma_accuracy():
    probs = one_hot([0, 1, 13, 5], 24) * 0.9 + 0.001
    targets = one_hot([0, 2, 1, 5], 24)
    assert scene_score("top1_acc", probs, targets) == {"top1_acc": 0.5}
    assert scene_score("pitch_acc", probs, targets) == {"pitch_acc": 0.5}
    assert scene_score("chroma_acc", probs, targets) == {"chroma_acc": 0.75}  # 13 and 1 share a chroma


def test_map_auc_dprime_by_hand():
    scores = np.array([[0.9, 0.1], [0.8, 0.4], [0.7, 0.35], [0.6, 0.8]])
    targets = np.array([[1, 0], [0, 0], [1, 1], [0, 1]], dtype=np.float32)
    # class 0: positives ranked 1 and 3 → AP = (1/1 + 2/3) / 2; class 1: ranked 1 and 3 → same
    assert scene_score("mAP", scores, targets)["mAP"] == pytest.approx((1 + 2 / 3) / 2)
    # class 0: 3 of 4 positive/negative pairs ordered right; class 1: 0.35 < 0.4 → also 3 of 4
    assert scene_score("aucroc", scores, targets)["aucroc"] == pytest.approx(0.75)
    assert scene_score("d_prime", scores, targets)["d_prime"] == pytest.approx(0.6744897501960817 * math.sqrt(2))


def test_dprime_corner_cases_follow_heareval():
    targets = np.array([[1, 0], [0, 1], [1, 0], [0, 1]], dtype=np.float32)
    assert scene_score("d_prime", targets * 0.8 + 0.1, targets)["d_prime"] == math.inf  # AUC = 1
    no_negative = np.ones((4, 2), dtype=np.float32)
    assert math.isnan(scene_score("d_prime", targets, no_negative)["d_prime"])
    assert math.isnan(scene_score("aucroc", targets, no_negative)["aucroc"])


@pytest.mark.parametrize("metric, bad", [("top1_acc", "shape"), ("nonsense", "name"), ("segment_1s_er", "kind")])
def test_bad_scene_input_raises_value_error(metric, bad):
    probs = np.zeros((3, 2)) if bad != "shape" else np.zeros((3, 3))
    with pytest.raises(ValueError, match=metric):
        scene_score(metric, probs, np.zeros((3, 2)))


def ev(label: str, start: float, end: float) -> dict:
    return {"label": label, "start": start, "end": end}


REFERENCE = {"a.wav": [ev("x", 1000, 2000), ev("y", 3000, 3500)], "b.wav": [ev("x", 300, 900)]}


@pytest.mark.parametrize(
    "metric, predicted, expected",
    [
        # 1190 is 190 ms late: a hit with a 200 ms collar, a miss with 50 ms; 5000 is a false positive
        ("event_onset_200ms_fms", {"a.wav": [ev("x", 1190, 1600), ev("y", 3000, 3600), ev("x", 5000, 5500)],
                                   "b.wav": []}, (2, 3, 3)),
        ("event_onset_50ms_fms", {"a.wav": [ev("x", 1190, 1600), ev("y", 3000, 3600), ev("x", 5000, 5500)],
                                  "b.wav": []}, (1, 3, 3)),
        # exactly on the 200 ms collar (1.2 - 1.0 in seconds) counts as a hit, as in sed_eval
        ("event_onset_200ms_fms", {"a.wav": [ev("x", 1200, 2000)], "b.wav": [ev("x", 500, 900)]}, (2, 2, 3)),
        # right onset, wrong label: no hit
        ("event_onset_200ms_fms", {"a.wav": [ev("y", 1000, 2000)], "b.wav": []}, (0, 1, 3)),
        # offset collar is max(50 ms, 20 % of the reference length): 1000 ms event → 200 ms, 600 ms → 120 ms
        ("event_onset_offset_50ms_20perc_fms", {"a.wav": [ev("x", 1000, 2190), ev("y", 3040, 3590)],
                                                "b.wav": [ev("x", 300, 1100)]}, (2, 3, 3)),
        # only files present in the predictions are evaluated (heareval loops over predicted files)
        ("event_onset_200ms_fms", {"a.wav": [ev("x", 1000, 2000)]}, (1, 1, 2)),
    ],
)
def test_event_f_measure_by_hand(metric, predicted, expected):
    n_tp, n_sys, n_ref = expected
    precision, recall = n_tp / n_sys, n_tp / n_ref
    scores = event_score(metric, predicted, REFERENCE, VOCAB)
    assert scores[f"{metric}_precision"] == pytest.approx(precision)
    assert scores[f"{metric}_recall"] == pytest.approx(recall)
    f = 0.0 if n_tp == 0 else 2 * precision * recall / (precision + recall)
    assert scores[metric] == pytest.approx(f)


def test_no_predicted_event_gives_nan_f_measure_like_sed_eval():
    scores = event_score("event_onset_200ms_fms", {"a.wav": [], "b.wav": []}, REFERENCE, VOCAB)
    assert math.isnan(scores["event_onset_200ms_fms"]) and scores["event_onset_200ms_fms_recall"] == 0.0


def test_segment_error_rate_by_hand():
    # reference x active in 1 s segments 0 and 1, prediction only in segment 0: one deletion in 2 → 0.5
    reference = {"a.wav": [ev("x", 0, 2000)]}
    assert event_score("segment_1s_er", {"a.wav": [ev("x", 0, 1000)]}, reference, VOCAB) == {"segment_1s_er": 0.5}
    assert event_score("segment_1s_er", {"a.wav": [ev("x", 0, 2000)]}, reference, VOCAB) == {"segment_1s_er": 0.0}
    assert maximize("segment_1s_er") is False and maximize("mAP") is True


def random_events(rng: np.random.Generator, n: int) -> list[dict]:
    starts = rng.integers(0, 40, n) * 50.0  # on a 50 ms grid so that many pairs sit exactly on a collar
    return [ev(VOCAB[rng.integers(0, 2)], s, s + rng.integers(1, 30) * 50.0) for s in starts]


N_RANDOM_CASES = 200


def random_case(rng: np.random.Generator) -> tuple[dict, dict]:
    """(predicted, reference) over 1-8 files: 0-6 events each, on a 50 ms grid or at arbitrary times."""
    names = [f"f{i}.wav" for i in range(int(rng.integers(1, 9)))]
    if rng.random() < 0.5:
        def draw(n):
            return random_events(rng, n)
    else:
        def draw(n):
            starts = rng.uniform(0, 5000, n)
            return [ev(VOCAB[rng.integers(0, 2)], s, s + rng.uniform(0, 3000)) for s in starts]
    reference = {name: draw(int(rng.integers(0, 7))) for name in names}
    predicted = {name: draw(int(rng.integers(0, 7))) for name in names}
    return predicted, reference


@pytest.mark.parametrize("metric", EVENT_METRICS)
def test_event_metrics_equal_sed_eval_on_random_cases(metric):
    pytest.importorskip("sed_eval")
    rng = np.random.default_rng(EVENT_METRICS.index(metric))
    for case in range(N_RANDOM_CASES):
        predicted, reference = random_case(rng)
        ours = event_score(metric, predicted, reference, VOCAB)
        if metric == "segment_1s_er":
            got, expected = (ours[metric],), (sed_eval_reference_er(predicted, reference),)
        else:
            got = (ours[metric], ours[f"{metric}_precision"], ours[f"{metric}_recall"])
            expected = sed_eval_reference_f(metric, predicted, reference)
        np.testing.assert_allclose(got, expected, rtol=1e-12, err_msg=f"case {case}: {predicted} vs {reference}")


def sed_eval_reference_er(predicted: dict, reference: dict) -> float:
    """Overall 1 s segment-based error rate computed by sed_eval itself, file by file (as heareval)."""
    import sed_eval

    metrics = sed_eval.sound_event.SegmentBasedMetrics(event_label_list=VOCAB, time_resolution=1.0)
    for name, events in predicted.items():
        metrics.evaluate(reference_event_list=as_sed_eval_list(name, reference[name]),
                         estimated_event_list=as_sed_eval_list(name, events))
    return metrics.results_overall_metrics()["error_rate"]["error_rate"]


def as_sed_eval_list(name: str, events: list[dict]) -> list[dict]:
    return [{"event_label": e["label"], "event_onset": e["start"] / 1000.0, "event_offset": e["end"] / 1000.0,
             "file": name} for e in events]


def sed_eval_reference_f(metric: str, predicted: dict, reference: dict) -> tuple[float, float, float]:
    """Overall (F, precision, recall) computed by sed_eval itself, file by file."""
    import sed_eval

    params = {
        "event_onset_200ms_fms": {"t_collar": 0.2, "evaluate_offset": False},
        "event_onset_50ms_fms": {"t_collar": 0.05, "evaluate_offset": False},
        "event_onset_offset_50ms_20perc_fms": {"t_collar": 0.05, "evaluate_offset": True, "percentage_of_length": 0.2},
    }[metric]
    metrics = sed_eval.sound_event.EventBasedMetrics(event_label_list=VOCAB, evaluate_onset=True, **params)
    for name, events in predicted.items():
        metrics.evaluate(reference_event_list=as_sed_eval_list(name, reference[name]),
                         estimated_event_list=as_sed_eval_list(name, events))
    overall = metrics.results_overall_metrics()["f_measure"]
    return overall["f_measure"], overall["precision"], overall["recall"]


def split_with_probs(probs_per_file: list[np.ndarray], hop: float = 100.0, shuffle_rows: bool = False):
    """SplitFeatures of event frames (rows optionally shuffled) and the matching (n_frames, n_labels) probs."""
    names = [f"f{i}.wav" for i in range(len(probs_per_file))]
    probs = np.concatenate(probs_per_file).astype(np.float32)
    file_index = np.concatenate([np.full(len(p), i) for i, p in enumerate(probs_per_file)])
    times = np.concatenate([np.arange(len(p)) * hop for p in probs_per_file])
    order = np.random.default_rng(0).permutation(len(probs)) if shuffle_rows else np.arange(len(probs))
    features = SplitFeatures(split="valid", filenames=names, x=np.zeros((len(probs), 1), np.float32),
                             y=np.zeros_like(probs), file_index=file_index[order], timestamps_ms=times[order],
                             events={})
    return features, probs[order]


ACTIVITY = np.array([0, 0, 1, 0, 0, 1, 1, 1, 0, 0], dtype=np.float32)  # frames 100 ms apart


@pytest.mark.parametrize("shuffle_rows", [False, True])
@pytest.mark.parametrize(
    "median_ms, min_duration, expected",
    [
        (0, 0, [("x", 200.0, 200.0), ("x", 500.0, 700.0)]),  # no filter: a one-frame event (length 0) is kept
        (0, 100, [("x", 500.0, 700.0)]),
        (300, 200, [("x", 500.0, 700.0)]),  # width 3 removes the isolated frame; end - start = 200 is kept
        (300, 250, []),
        (140, 0, [("x", 200.0, 200.0), ("x", 500.0, 700.0)]),  # round(1.4) = 1 frame: no smoothing
    ],
)
def test_postprocessing_by_hand(median_ms, min_duration, expected, shuffle_rows):
    probs = np.stack([ACTIVITY, np.full(10, 0.5)], axis=1)  # label y stays at 0.5: never above threshold
    features, rows = split_with_probs([probs, np.zeros((10, 2))], shuffle_rows=shuffle_rows)
    pp = (("median_filter_ms", median_ms), ("min_duration", min_duration))
    events = frames_to_events(rows, frame_layout(features), VOCAB, [pp])[pp]
    assert events["f1.wav"] == []
    assert [(e["label"], e["start"], e["end"]) for e in events["f0.wav"]] == expected


def test_postprocessing_grid_order_and_validation():
    assert postprocessing_grid({"min_duration": [125, 250], "median_filter_ms": [250]}) == [
        (("median_filter_ms", 250), ("min_duration", 125)), (("median_filter_ms", 250), ("min_duration", 250))]
    with pytest.raises(ValueError, match="unknown keys"):
        postprocessing_grid({"median_ms": [1]})


@pytest.mark.parametrize("events, problem", [
    ([ev("z", 0, 1000)], "label 'z'"), ([ev("x", -500, 1000)], "negative or non-finite"),
    ([ev("x", 0, math.nan)], "negative or non-finite"),
])
def test_segment_error_rate_names_bad_events(events, problem):
    with pytest.raises(ValueError, match=problem):
        event_score("segment_1s_er", {"a.wav": events}, {"a.wav": [ev("x", 0, 1000)]}, VOCAB)
