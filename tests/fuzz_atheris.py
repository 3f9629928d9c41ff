"""Coverage-guided fuzzing of what a node does with bytes from a connection
(tests/fuzz_targets.wire_case) with atheris/libFuzzer. Run by tests/test_fuzz.py;
by hand: python tests/fuzz_atheris.py -runs=1000000 CORPUS_DIR"""

import sys

import atheris

with atheris.instrument_imports():
    import fuzz_targets  # noqa: E402  (instrumented: peerfarm.wire, core, msgpack glue)


def test_one_input(data: bytes) -> None:
    fuzz_targets.wire_case(data)


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
