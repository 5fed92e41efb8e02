"""Loading feature files: every row loaded or named with its line and reason, loading twice
changes nothing, on every backend; plus Parquet and the ``features load`` command."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from buttress.cli.features import app
from buttress.features import (
    FeatureLookup,
    FeatureStore,
    FeatureTable,
    LoadError,
    RejectedRow,
    load_file,
    load_into,
)
from tests.support import matrix_url
from tests.test_features_store import BACKENDS, USER, open_store

DATA = Path(__file__).parent / "data" / "features"


@pytest.fixture(params=BACKENDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[FeatureStore]:
    async with open_store(matrix_url(request.param, request, tmp_path)) as opened:
        yield opened


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


async def test_good_csv_loads_every_row(store: FeatureStore) -> None:
    report = await load_into(store, "user", DATA / "users.csv")

    assert (report.loaded, report.rejected, report.ignored_columns) == (4, (), ())
    lookup = await store.get_many("user", [42, 1, 3])
    assert lookup.rows == (
        {"orders_count": 31, "return_rate": 0.5, "segment": "regular"},
        {"orders_count": 12, "return_rate": 0.08, "segment": "vip"},
        {"orders_count": 4, "return_rate": 0.25, "segment": "new"},  # empty cell: the default
    )
    assert lookup.missing == ()


async def test_bad_rows_are_named_and_not_written(store: FeatureStore, tmp_path: Path) -> None:
    csv_file = write(
        tmp_path / "users.csv",
        "id,orders_count,return_rate,segment\n"  # line 1
        "1,3,0.5,vip\n"  # 2: good
        ",3,0.5,vip\n"  # 3: no id
        "2,three,0.5,vip\n"  # 4: not an int
        "3,3,lots,vip\n"  # 5: not a float
        "4,3.5,nan,vip\n"  # 6: two bad values, both named
        "5,3,0.5\n"  # 7: a field short
        "\n"  # 8: blank, no row
        '6,1,0.1,"two\nlines"\n'  # 9-10: good, a quoted newline
        "7,,,\n"  # 11: nothing to load
        "8,2,0.2,ok\n",  # 12: good
    )

    report = await load_into(store, "user", csv_file)

    assert report.loaded == 3
    assert report.rejected == (
        RejectedRow(3, None, "missing id"),
        RejectedRow(4, "2", "orders_count: 'three' is not a number (declared int)"),
        RejectedRow(5, "3", "return_rate: 'lots' is not a number (declared float)"),
        RejectedRow(
            6,
            "4",
            "orders_count: '3.5' is not an integer (declared int); "
            "return_rate: 'nan' is not a finite number (declared float)",
        ),
        RejectedRow(7, None, "has 3 fields, the header has 4"),
        RejectedRow(11, "7", "no feature values (every feature cell is empty)"),
    )
    assert report.summary() == f"{csv_file}: 3 rows loaded, 6 rejected"
    lookup = await store.get_many("user", [1, 2, 3, 4, 5, 6, 7, 8])
    assert lookup.found == (True, False, False, False, False, True, False, True)
    assert lookup.rows[5]["segment"] == "two\nlines"


async def test_loading_twice_gives_the_same_state(store: FeatureStore, tmp_path: Path) -> None:
    csv_file = write(
        tmp_path / "users.csv",
        "id,orders_count,segment\n1,1,a\n2,2,b\n1,10,\nx,bad,c\n",
    )
    ids = [1, 2, "x"]

    first = await load_into(store, "user", csv_file, chunk_size=2)
    state = await store.get_many("user", ids)
    second = await load_into(store, "user", csv_file, chunk_size=2)

    assert second == first
    assert await store.get_many("user", ids) == state
    # a later row wins per feature; a feature it leaves empty keeps the earlier value
    assert state.rows[0] == {"orders_count": 10, "return_rate": 0.0, "segment": "a"}


async def test_unknown_columns_stop_the_load_unless_ignored(
    store: FeatureStore, tmp_path: Path
) -> None:
    csv_file = write(tmp_path / "users.csv", "id,orders_count,retrun_rate\n1,3,0.5\n")

    with pytest.raises(LoadError, match="retrun_rate are not declared features"):
        await load_into(store, "user", csv_file)
    assert (await store.get_many("user", [1])).missing == ("1",)

    report = await load_into(store, "user", csv_file, ignore_unknown_columns=True)
    assert (report.loaded, report.ignored_columns) == (1, ("retrun_rate",))
    assert (await store.get_many("user", [1])).rows[0]["orders_count"] == 3


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "the file is empty"),
        ("user_id,orders_count\n1,2\n", "no id column 'id'"),
        ("id,orders_count,orders_count\n1,2,3\n", "the header repeats orders_count"),
    ],
)
async def test_files_that_cannot_load_at_all(tmp_path: Path, text: str, message: str) -> None:
    async with open_store("memory://") as store:
        with pytest.raises(LoadError, match=message):
            await load_into(store, "user", write(tmp_path / "users.csv", text))


async def test_other_id_column_and_unsupported_files(tmp_path: Path) -> None:
    async with open_store("memory://") as store:
        csv_file = write(tmp_path / "users.csv", "user_id,orders_count\n9,2\n")
        report = await load_into(store, "user", csv_file, id_column="user_id")
        assert report.loaded == 1
        assert (await store.get_many("user", [9])).rows[0]["orders_count"] == 2
        with pytest.raises(LoadError, match=r"unsupported file type '\.json'"):
            await load_into(store, "user", write(tmp_path / "users.json", "{}"))
        with pytest.raises(LoadError, match="No such file"):
            await load_into(store, "user", tmp_path / "absent.csv")


async def test_progress_reaches_the_total(tmp_path: Path) -> None:
    calls: list[tuple[int, int | None]] = []
    rows = "".join(f"{i},{i}\n" for i in range(5))
    csv_file = write(tmp_path / "users.csv", "id,orders_count\n" + rows)
    async with open_store("memory://") as store:
        await load_into(store, "user", csv_file, chunk_size=2, progress=lambda *a: calls.append(a))
    assert calls == [(2, 5), (4, 5), (5, 5)]


async def test_load_file_opens_and_closes_its_own_store(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/features.db"

    report = await load_file(url, USER, DATA / "users.csv", namespace="shop")

    assert report.loaded == 4
    async with open_store(url, namespace="shop") as store:
        assert (await store.get_many("user", [42])).rows[0]["orders_count"] == 31
    with pytest.raises(ValueError, match="load_into"):
        await load_file("memory://", USER, DATA / "users.csv")


# --- Parquet ---------------------------------------------------------------------------------


async def test_parquet_loads_typed_columns(store: FeatureStore, tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    path = tmp_path / "users.parquet"
    pq.write_table(
        pa.table(
            {
                "id": [1, 2, None, 4],
                "orders_count": [5, None, 1, 2],
                "return_rate": [0.5, 0.25, 0.1, 0.2],
                "segment": ["vip", "new", "x", "y"],
            }
        ),
        path,
    )
    bad_path = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"id": [1.0, 2.5], "orders_count": [1.5, 2.0]}), bad_path)

    report = await load_into(store, "user", path, chunk_size=3)
    bad = await load_into(store, "user", bad_path)

    assert report.loaded == 3
    assert report.rejected == (RejectedRow(3, None, "missing id"),)
    assert bad.rejected == (
        RejectedRow(1, "1", "orders_count: 1.5 is not an integer (declared int)"),
        RejectedRow(2, None, "id 2.5 is not a string or an integer"),
    )
    lookup = await store.get_many("user", [1, 2, 4])
    assert lookup.rows[0] == {"orders_count": 5, "return_rate": 0.5, "segment": "vip"}
    assert lookup.rows[1] == {"orders_count": 0, "return_rate": 0.25, "segment": "new"}


async def test_parquet_without_pyarrow_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)  # import now raises ImportError
    async with open_store("memory://") as store:
        with pytest.raises(LoadError, match="pip install pyarrow"):
            await load_into(store, "user", write(tmp_path / "users.parquet", ""))


# --- the command line --------------------------------------------------------------------


def test_cli_loads_and_reports(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/features.db"
    declare = [
        "--entity",
        "user",
        "--default",
        "orders_count=0",
        "--default",
        "return_rate=0.0",
        "--default",
        "segment=new",
    ]
    runner = CliRunner()

    ok = runner.invoke(app, ["load", url, str(DATA / "users.csv"), *declare])
    bad_file = write(tmp_path / "bad.csv", "id,orders_count\n1,2\n2,many\n")
    bad = runner.invoke(app, ["load", url, str(bad_file), *declare])
    unknown = runner.invoke(
        app, ["load", url, str(bad_file), "--entity", "user", "--default", "return_rate=0.0"]
    )

    assert ok.exit_code == 0, ok.output
    assert "4 rows loaded, 0 rejected" in ok.output
    assert bad.exit_code == 1, bad.output
    assert "1 row loaded, 1 rejected" in bad.output
    assert "'many' is not a number" in bad.output
    assert unknown.exit_code == 2, unknown.output
    assert "orders_count are not declared features" in unknown.output


def test_cli_takes_the_table_from_the_services_code(tmp_path: Path) -> None:
    service = write(
        tmp_path / "service.py",
        "from buttress.features import FeatureTable\n"
        "tables = [FeatureTable(entity='user', defaults={'orders_count': 0}),\n"
        "          FeatureTable(entity='shop', defaults={'rating': 0.0})]\n",
    )
    url = f"sqlite:///{tmp_path}/features.db"
    csv_file = write(tmp_path / "shops.csv", "id,rating\ns1,4.5\n")

    result = CliRunner().invoke(
        app,
        [
            "load",
            url,
            str(csv_file),
            "--table",
            f"{service}:tables",
            "--entity",
            "shop",
            "--namespace",
            "svc",
        ],
    )
    neither = CliRunner().invoke(app, ["load", url, str(csv_file), "--entity", "shop"])

    assert result.exit_code == 0, result.output
    shop = FeatureTable(entity="shop", defaults={"rating": 0.0})

    async def read() -> FeatureLookup:
        async with open_store(url, [shop], namespace="svc") as store:
            return await store.get_many("shop", ["s1"])

    assert asyncio.run(read()).rows[0] == {"rating": 4.5}
    assert neither.exit_code == 2
    assert "declare the features" in neither.output
