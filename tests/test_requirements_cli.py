"""`peerfarm node --tag`, `peerfarm submit --require / --require-memory / --max-nodes`:
parsed into what the node and the job request carry, bad values refused with one line
that says what to type, and the node's tags also a config-file setting."""

from __future__ import annotations

import json

import pytest

from peerfarm.cli.commands import request_from_args
from peerfarm.cli.main import build_parser, main
from peerfarm.job_request import JobRequest, SubmitError
from peerfarm.jobspec import prepare_new_job
from peerfarm.renderers.registry import renderer_plugins


def _submit_args(*extra: str):  # noqa: ANN202
    argv = ["submit", "builtin:demo", "--node", "127.0.0.1:1", "--frames", "1-4", *extra]
    return build_parser().parse_args(argv)


def test_submit_options_reach_the_new_job():
    args = _submit_args(
        "--require", "GPU", "--require", "lab2", "--require-memory", "16G", "--max-nodes", "4"
    )
    request = request_from_args(args)
    assert (request.require, request.require_memory, request.max_nodes) == (
        ["gpu", "lab2"],
        16 * 2**30,
        4,
    )
    # Through the wire and into NEW_JOB.
    request = JobRequest.from_wire(request.to_wire())
    payload = prepare_new_job(request, "job1", renderer_plugins(), {"builtin"}).payload
    assert payload["require"] == ["gpu", "lab2"]
    assert payload["require_memory"] == 16 * 2**30
    assert payload["max_nodes"] == 4
    # Without them: no fields at all (a job as before).
    payload = prepare_new_job(
        request_from_args(_submit_args()), "job2", renderer_plugins(), {"builtin"}
    ).payload
    assert not {"require", "require_memory", "max_nodes"} & set(payload)


def test_sizes_are_read_as_people_write_them():
    for text, expected in (("512M", 512 * 2**20), ("1.5G", int(1.5 * 2**30)), ("4096", 4096)):
        assert request_from_args(_submit_args("--require-memory", text)).require_memory == expected


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--require", "gp u"], "argument --require: tag 'gp u': use 1-32 letters"),
        (["--require", ""], "argument --require: tag '': use 1-32 letters"),
        (["--require-memory", "16Q"], "memory '16Q': expected a size such as 16G"),
        (["--require-memory", "0"], "memory '0': give a size from 1 byte"),
        (["--max-nodes", "0"], "max nodes '0': give a whole number from 1"),
        (["--max-nodes", "two"], "max nodes 'two': give a whole number from 1"),
    ],
)
def test_bad_submit_values_are_one_clear_line(capsys, argv, expected):
    with pytest.raises(SystemExit) as exit_:
        main(["submit", "builtin:demo", "--node", "127.0.0.1:1", "--no-config", *argv])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert expected in err, err
    assert "Traceback" not in err


def test_a_request_from_elsewhere_is_checked_at_the_node():
    plugins = renderer_plugins()
    base = request_from_args(_submit_args())
    for bad, expected in (
        (base.replace(require=["GPU!"]), "--require: tag 'GPU!'"),
        (base.replace(require=[f"t{i}" for i in range(17)]), "a job requires at most 16"),
        (base.replace(require_memory=-1), "--require-memory: -1 is not a size"),
        (base.replace(max_nodes=-3), "--max-nodes: -3: give a whole number"),
    ):
        with pytest.raises(SubmitError, match=expected.replace("?", r"\?")):
            prepare_new_job(bad, "job1", plugins, {"builtin"})
    with pytest.raises(SubmitError, match="require has the wrong type"):
        JobRequest.from_wire({**base.to_wire(), "require": "gpu"})


def test_node_tags_on_the_command_line_and_in_the_config_file(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("PEERFARM_CONFIG", raising=False)
    args = build_parser().parse_args(["node", "--tag", "GPU", "--tag", "lab2"])
    assert args.tag == ["gpu", "lab2"]
    path = tmp_path / "farm.toml"
    path.write_text('[node]\ntag = ["gpu", "Lab2"]\n')
    assert main(["config", "show", "--json", "node", "--config", str(path)]) == 0
    shown = json.loads(capsys.readouterr().out)["settings"]["tag"]
    assert shown == {"value": ["gpu", "lab2"], "source": f"{path} [node]"}


def test_a_bad_node_tag_is_one_clear_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["node", "--no-config", "--tag", "my gpu"])
    assert exit_.value.code == 2
    assert "argument --tag: tag 'my gpu': use 1-32 letters" in capsys.readouterr().err
    path = tmp_path / "farm.toml"
    path.write_text('[node]\ntag = ["my gpu"]\n')
    assert main(["node", "--config", str(path)]) == 1
    err = capsys.readouterr().err
    assert "tag 'my gpu'" in err and "Traceback" not in err, err


def test_memory_and_cores_are_detected():
    import os
    import sys
    from pathlib import Path

    from peerfarm.runtime.hardware import logical_cores, total_memory

    memory = total_memory()
    assert memory > 64 * 2**20  # any machine that runs the tests has more
    assert logical_cores() == os.cpu_count()
    if sys.platform.startswith("linux"):
        meminfo = Path("/proc/meminfo").read_text().splitlines()
        kib = int(next(line for line in meminfo if line.startswith("MemTotal:")).split()[1])
        assert abs(memory - kib * 1024) <= 0.01 * memory  # the kernel's own count
