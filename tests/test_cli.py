import json

from fastflow.cli import main


def test_demo_prints_what_it_did(capsys):
    assert main(["demo", "--subs", "500", "--publishes", "20000", "--subjects", "2000",
                 "--repeat", "1"]) == 0
    out = capsys.readouterr().out
    assert "500 subscriptions (25 with wildcards), 20,000 publishes over 2,000" in out
    assert "match_batch()" in out and "cache hit rate" in out


def test_demo_json(capsys):
    assert main(["--subs", "300", "--publishes", "5000", "--subjects", "1000", "--repeat", "1",
                 "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["deliveries"] >= 0 and out["match_cache_off_per_s"] > 0
    assert 0 <= out["cache_hit_rate"] <= 1


def test_demo_rejects_bad_arguments(capsys):
    import pytest

    with pytest.raises(SystemExit):
        main(["demo", "--subs", "0"])
    assert "--subs must be at least 1" in capsys.readouterr().err
