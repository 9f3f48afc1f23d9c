"""Local state is private (issue 11 #5): var/ 0700, the SQLite file 0600, also when an older version
left them readable by everyone."""

import stat

from console.local_secrets import make_private


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_existing_world_readable_state_is_tightened(tmp_path):
    var = tmp_path / "var"
    (var / "broker" / "queue").mkdir(parents=True)
    var.chmod(0o755)
    for name in ("apparate.sqlite3", "apparate.sqlite3-wal", "apparate.sqlite3-shm", "celerybeat-schedule.db",
                 "notes.txt"):
        (var / name).write_bytes(b"x")
        (var / name).chmod(0o644)
    make_private(var, files=[var / "apparate.sqlite3", var / "celerybeat-schedule"],
                 subdirectories=[var / "broker", var / "broker" / "queue"])
    assert mode(var) == mode(var / "broker") == mode(var / "broker" / "queue") == 0o700
    assert {name: mode(var / name) for name in ("apparate.sqlite3", "apparate.sqlite3-wal", "apparate.sqlite3-shm",
                                                "celerybeat-schedule.db")} == dict.fromkeys(
        ("apparate.sqlite3", "apparate.sqlite3-wal", "apparate.sqlite3-shm", "celerybeat-schedule.db"), 0o600)
    assert mode(var / "notes.txt") == 0o644  # not state of ours: left alone (the directory protects it)


def test_a_fresh_database_file_is_created_private(tmp_path):
    var = tmp_path / "var"
    make_private(var, files=[var / "apparate.sqlite3"])
    assert (var / "apparate.sqlite3").read_bytes() == b""  # SQLite opens an empty file as a new database
    assert mode(var / "apparate.sqlite3") == 0o600 and mode(var) == 0o700
