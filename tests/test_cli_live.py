"""The sweep/tune live line's counts (rnnl2/cli/live.py): epochs from each run's metrics.jsonl,
a run counted once however often it is announced, early stopping shrinking the plan, and an
ETA from this call's pace only."""

from __future__ import annotations

from rnnl2.cli.live import Board, clock


def log_epochs(folder, count: int) -> None:
    folder.mkdir(exist_ok=True)
    (folder / "metrics.jsonl").write_text("".join('{"epoch": %d}\n' % (i + 1) for i in range(count)))


def fresh(board: Board) -> tuple[int, int, float | None]:
    board.polled = 0.0  # read the folders now, not at most once a second
    return board.counts()


def test_counts_follow_the_folders_and_each_run_counts_once(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    board = Board("runs", 3, 12, plan={"a": 4, "b": 4, "c": 4})
    board.known("c", 4, done=True)  # finished before this call: not part of its pace
    log_epochs(a, 1)  # a resumes after one epoch
    board.start("a", a)
    assert fresh(board)[:2] == (5, 12) and fresh(board)[2] is None  # no pace yet
    board.started -= 10.0  # ten seconds in, a has trained two more epochs
    log_epochs(a, 3)
    trained, planned, eta = fresh(board)
    assert (trained, planned) == (7, 12) and 20.0 < eta < 30.0  # 5 epochs left at 2 per 10 s
    log_epochs(a, 3)  # a stops early at 3 epochs: its plan shrinks to what it trained
    board.end("a", "done", a)
    board.end("a", "done", a)  # announced twice: counted once
    assert len(board.done) == 2 and fresh(board)[:2] == (7, 11)
    log_epochs(b, 0)
    board.start("b", b)
    board.end("b", "failed", b)
    assert board.failed == {"b"} and "runs 2/3 done · 0 running · 1 failed" in board.text()
    board.start("b", b)  # retried: no longer counted failed
    assert not board.failed and "1 running" in board.text()


def test_clock_reads_hours_minutes_seconds():
    assert (clock(0), clock(61.4), clock(3725)) == ("0:00:00", "0:01:01", "1:02:05")
