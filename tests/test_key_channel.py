"""The batch's key channel: a 0600 file in a 0700 directory, read once and deleted by the job; the job's
environment carries the file's path, and a candidate's worker gets neither path nor key."""

from __future__ import annotations

import stat

from agent.batch.backends import job_env
from agent.batch.key_channel import KEY_FILE_ENV, take_key, write_key_file
from agent.evaluation.sandbox import worker_env

KEY = "sk-channel-SECRET-777"


def test_the_key_file_is_private_and_read_once(tmp_path):
    path = write_key_file(KEY)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    env = {KEY_FILE_ENV: str(path)}
    assert take_key(env) == KEY
    assert not path.parent.exists() and KEY_FILE_ENV not in env  # gone before any candidate runs
    assert take_key(env) is None  # a second read (a candidate trying) finds nothing


def test_a_job_is_told_where_the_key_is_and_a_worker_is_not(monkeypatch):
    path = write_key_file(KEY)
    try:
        env = job_env(None, path)
        assert env[KEY_FILE_ENV] == str(path) and KEY not in env[KEY_FILE_ENV]
        assert KEY_FILE_ENV not in worker_env(base=env)  # a candidate's worker is not even told where
    finally:
        take_key({KEY_FILE_ENV: str(path)})
