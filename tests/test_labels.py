import pytest

from pipeline.errors import PipelineError
from pipeline.event_metrics import event_scores, match_events
from pipeline.labels import LabelledEvent, read_audacity_labels

LABELS = {"water", "alarm", "other"}


def test_audacity_file_is_read(tmp_path):
    path = tmp_path / "rec.txt"
    path.write_text("1.5\t3.25\twater\n\\\t100.0\t2000.0\n\n4\t4\talarm\r\n", encoding="utf-8")
    assert read_audacity_labels(path, LABELS) == [LabelledEvent(1.5, 3.25, "water"),
                                                  LabelledEvent(4.0, 4.0, "alarm")]


@pytest.mark.parametrize("text, message", [
    ("5\t6\twater\n2\t3\talarm\n", r"rec.txt:2: starts at 2 s, before the line above"),
    ("1\t2\tdog\n", r"rec.txt:1: unknown label 'dog'"),
    ("3\t2\twater\n", r"rec.txt:1: expected 0 <= start <= end, got 3 and 2"),
    ("1\tabc\twater\n", r"rec.txt:1: start and end must be numbers"),
    ("0\t1\twater\n1 2 water\n", r"rec.txt:2: expected start<TAB>end<TAB>label"),
    ("-1\t2\twater\n", r"rec.txt:1: expected 0 <= start"),
])
def test_bad_lines_name_file_and_line(tmp_path, text, message):
    path = tmp_path / "rec.txt"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(PipelineError, match=message):
        read_audacity_labels(path, LABELS)


def test_events_match_one_to_one_when_they_overlap_within_the_tolerance():
    reference = [(10.0, 12.0, "water"), (30.0, 31.0, "water"), (50.0, 52.0, "alarm")]
    detected = [(10.4, 13.0, "water"), (10.6, 11.0, "water"),   # two for one: one is false
                (33.0, 34.0, "water"),                          # too late: false, and a miss
                (28.0, 28.5, "water"),                          # ends 1.5 s early: false too
                (50.2, 51.0, "alarm"), (70.0, 71.0, "alarm")]   # one right, one false
    counts = match_events(reference, detected, tolerance_s=1.0)
    assert counts["water"] == {"true_positives": 1, "false_positives": 3, "false_negatives": 1}
    assert counts["alarm"] == {"true_positives": 1, "false_positives": 1, "false_negatives": 0}
    scores = event_scores(counts, hours=0.5)
    assert scores["per_class"]["water"]["precision"] == pytest.approx(1 / 4)
    assert scores["per_class"]["water"]["recall"] == pytest.approx(1 / 2)
    assert scores["overall"]["f1"] == pytest.approx(2 * 2 / (2 * 2 + 4 + 1))
    assert scores["overall"]["false_activations_per_hour"] == pytest.approx(4 / 0.5)
    late = match_events([(10.0, 12.0, "alarm")], [(12.8, 14.0, "alarm")], tolerance_s=1.0)
    assert late["alarm"]["true_positives"] == 1  # starts after the end, within the tolerance


def test_standard_event_metrics_use_the_collar_and_offset_rule():
    """sed_eval's event-based F1: onset within 200 ms, offset within 200 ms or
    20 % of the label's length."""
    from pipeline.event_metrics import standard_event_scores
    reference = [(1.0, 6.0, (0, "alarm")), (10.0, 11.0, (0, "alarm")), (3.0, 4.0, (1, "water"))]
    detected = [(1.15, 6.9, (0, "alarm")),    # onset 0.15 s off, offset 0.9 s <= 20 % of 5 s
                (10.5, 11.0, (0, "alarm")),   # onset 0.5 s late: wrong
                (3.0, 4.0, (0, "water"))]     # the right times in the wrong recording
    scores = standard_event_scores(reference, detected, ["alarm", "water"])
    assert scores["per_class"]["alarm"] == {"precision": 0.5, "recall": 0.5, "f1": 0.5}
    assert scores["per_class"]["water"]["recall"] == 0.0
    assert abs(scores["overall"]["f1"] - 1 / 3) < 1e-9
