"""Hostile column headers go from a CSV through init-dataset, ingest, features materialize/get/generate
as data: mapped to safe names recorded in the spec, never executed, and the values arrive."""

import ast
import csv
import json

import pytest
import yaml

from skiff.cli import main
from skiff.identifiers import is_identifier
from skiff.spec import load_spec

pytestmark = pytest.mark.slow  # opens Feast twice (~10 s each)


def _headers(canary):
    shell = f"touch {canary}"
    return {
        "key": "customer id",
        "quote": 'say "hi"',
        "newline": "line\nbreak",
        "py": f"__import__('os').system({shell!r})",
        "breakout": f'"); import os; os.system("{shell}"); #',
        "unicode": "prénom 日本",
        "long": "x" * 10_000,
        "empty": "",
        "clash1": "a b",
        "clash2": "a-b",
    }


def _run(capsys, *args):
    code = main(list(args))
    out = capsys.readouterr()
    assert code == 0, out.err
    return out.out


def test_hostile_headers_are_data_from_csv_to_online_features(skiff_env, capsys):
    canary = skiff_env / "CANARY"
    headers = _headers(canary)
    rows = [{"key": f"c{i}", "quote": f"q{i}", "newline": str(i * 1.5), "py": str(i), "breakout": f"b{i}",
             "unicode": str(10 + i), "long": str(100 + i), "empty": str(1000 + i), "clash1": str(i * 2),
             "clash2": f"z{i}"} for i in range(1, 7)]
    (skiff_env / "data").mkdir()
    with open(skiff_env / "data" / "hostile.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(list(headers.values()))
        for r in rows:
            w.writerow([r[k] for k in headers])
    assert not (skiff_env / "feature_repo").exists()  # a user's own folder: no Feast repo yet

    _run(capsys, "init-dataset", "data/hostile.csv", "--name", "hostile")
    spec_file = skiff_env / "datasets" / "hostile.yaml"
    spec = load_spec(spec_file)
    by_header = {(c.source_name if c.source_name is not None else n): n for n, c in spec.columns.items()}
    # every header recorded, the odd ones as source_name; an empty header gets a positional name (the
    # readers give empty-named columns one, so it needs no source_name)
    positional = [n for h, n in by_header.items() if h not in headers.values()]
    assert len(positional) == 1 and set(by_header) - {positional[0]} == set(headers.values()) - {""}
    names = {k: by_header[h] if h else positional[0] for k, h in headers.items()}
    assert all(is_identifier(n) for n in names.values())
    assert len(set(names.values())) == len(names)  # "a b" and "a-b" got distinct names
    assert names["key"] == "customer_id" and spec.key_columns == ["customer_id"]
    assert names["clash1"].startswith("a_b") and names["clash2"].startswith("a_b")

    # a derived feature over two mapped names goes through Feast's on-demand view
    raw = yaml.safe_load(spec_file.read_text())
    raw["derived"] = [{"name": "twice_py", "expr": f"{names['py']} * 2 + {names['clash1']}"}]
    spec_file.write_text(yaml.safe_dump(raw, allow_unicode=True, sort_keys=False))

    _run(capsys, "ingest", "-d", "hostile")
    text = _run(capsys, "features", "materialize", "-d", "hostile", "--json")
    summary = json.loads(text)
    assert summary["rows"] == 6 and summary["entities"] == 6
    assert (skiff_env / "feature_repo" / "feature_store.yaml").is_file()  # created on first use

    online = json.loads(_run(capsys, "features", "get", "-d", "hostile", "c2", "c5", "--json"))
    assert online["customer_id"] == ["c2", "c5"]
    assert online[names["quote"]] == ["q2", "q5"]
    assert online[names["newline"]] == [3.0, 7.5]
    assert online[names["py"]] == [2, 5]
    assert online[names["breakout"]] == ["b2", "b5"]
    assert online[names["unicode"]] == [12, 15]
    assert online[names["long"]] == [102, 105]
    assert online[names["empty"]] == [1002, 1005]
    assert online[names["clash1"]] == [4, 10] and online[names["clash2"]] == ["z2", "z5"]
    assert online["twice_py"] == [2 * 2 + 4, 5 * 2 + 10]

    out = _run(capsys, "features", "generate", "-d", "hostile")
    generated = (skiff_env / "feature_repo" / "hostile.py").read_text()
    assert out.strip().endswith("hostile.py")
    for header in [h for h in headers.values() if h and h != "customer id"] + ["__import__", "system("]:
        assert header not in generated  # only the mapped names reach the file
    tree = ast.parse(generated)
    assigned = {t.id for node in tree.body if isinstance(node, ast.Assign) for t in node.targets}
    assert assigned == {"DATASET", "SOURCE_PATH", "entity_0", "source", "feature_view", "DERIVED", "derived_view",
                        "feature_service"}
    assert not canary.exists()  # no payload ran anywhere on the way
