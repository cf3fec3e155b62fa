from export.compare import compare, main
from tests.fixtures.tiny_repository import build_tiny_repository


def test_versions_are_timed_side_by_side_on_the_same_texts(tmp_path, tiny_archive, capsys):
    first = build_tiny_repository(tmp_path / "a") / "imdb-lstm" / "1"
    second = build_tiny_repository(tmp_path / "b") / "imdb-lstm" / "1"
    result = compare([first, second], ["a great film"] * 30, ("fp32",), threads=1, rounds=2)
    assert set(result) == {str(first.resolve()), str(second.resolve())}
    assert all(rates["fp32"] > 0 for rates in result.values())
    assert main([str(first), "--data", str(tiny_archive), "--texts", "8", "--threads", "1",
                 "--precision", "fp32"]) == 0
    assert '"texts": 8' in capsys.readouterr().out
