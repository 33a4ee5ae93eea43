"""Progress reaches logs too: lines when output is not a terminal."""

import io

from pipeline import progress


def test_lines_when_not_a_terminal(monkeypatch):
    now = [0.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: now[0])
    out = io.StringIO()
    with progress.Progress(4, "features", "clip", stream=out, every_s=30) as p:
        for seconds in (10.0, 40.0, 41.0, 90.0):  # when each clip is done
            now[0] = seconds
            p.update()
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("features: 0/4 clips started")
    assert lines[1:3] == ["features: 2/4 clips done (40 s)", "features: 4/4 clips done (90 s)"]
    assert lines[-1] == "features: 4/4 clips done, finished (90 s)"
    assert len(lines) == 4  # the start, one line per 30 s at most, the end


def test_total_follows_early_stopping():
    out = io.StringIO()
    p = progress.Progress(300, "training", "epoch", stream=out)
    for _ in range(44):
        p.update()
    p.set_total(p.done)
    p.close()
    assert out.getvalue().splitlines()[-1].startswith("training: 44/44 epochs done, finished")
