"""The attack benchmark's pieces on tiny inputs, for correctness only (no timing is asserted): the RSS reader and
sampler, percentiles, the attack bodies, the attacker loop against a fake transport, and the report."""

from __future__ import annotations

import io
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image
from starlette.datastructures import UploadFile
from starlette.requests import Request

from bench.attack import (
    AttackRequest,
    RssSampler,
    attack,
    attack_requests,
    multipart_body,
    parse_vm_rss,
    refusal_seconds,
)
from bench.attack_report import LevelResult, Outcomes, percentile, render, table, verdicts

HANG = 30.0  # seconds: a bound on waiting for something that should happen at once, never a measurement

STATUS = """Name:\tpython
State:\tS (sleeping)
VmPeak:\t 2345678 kB
VmRSS:\t  312345 kB
RssAnon:\t  200000 kB
Threads:\t12
"""


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def test_vm_rss_is_read_in_bytes_from_a_proc_status_file() -> None:
    assert parse_vm_rss(STATUS) == 312345 * 1024
    assert parse_vm_rss("Name:\tkthreadd\nState:\tS (sleeping)\n") is None
    with pytest.raises(ValueError, match="unit"):
        parse_vm_rss("VmRSS:\t 12 MB\n")


def test_the_sampler_reads_the_file_until_stopped(tmp_path: Path) -> None:
    status = tmp_path / "status"
    status.write_text(STATUS)
    with RssSampler(status, interval_s=0.001) as sampler:
        for _ in range(int(HANG / 0.001)):
            if len(sampler.samples) >= 2:
                break
            status.write_text(STATUS.replace("312345", "400000"))
            sampler._stop.wait(0.001)
    assert set(sampler.samples) <= {312345 * 1024, 400000 * 1024}
    assert sampler.peak == max(sampler.samples)
    assert len(sampler.samples) >= 2


def test_the_sampler_of_a_missing_process_has_no_samples(tmp_path: Path) -> None:
    with RssSampler(tmp_path / "gone", interval_s=0.001) as sampler:
        pass
    assert (sampler.samples, sampler.peak) == ([], 0)


def test_percentiles_interpolate_between_ranks() -> None:
    assert percentile([4.0, 1.0, 3.0, 2.0], 50) == pytest.approx(2.5)
    assert percentile([4.0, 1.0, 3.0, 2.0], 99) == pytest.approx(3.97)
    assert percentile([4.0, 1.0, 3.0, 2.0], 100) == 4.0
    assert percentile([7.0], 99) == 7.0
    assert percentile([], 50) is None


async def _files(body: bytes, content_type: str) -> list[bytes]:
    """The `image` files of a multipart body, as Starlette (the service's parser) reads them."""
    scope = {"type": "http", "method": "POST", "headers": [(b"content-type", content_type.encode())]}

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async with Request(scope, receive).form(max_files=1000) as form:
        files = [item for item in form.getlist("image") if isinstance(item, UploadFile)]
        return [await item.read() for item in files]


@pytest.mark.anyio
async def test_the_multipart_body_holds_each_file_byte_for_byte() -> None:
    files = [b"first", b"\x89PNG\r\n\x1a\n--not-a-boundary\r\n", b""]
    assert await _files(*multipart_body(files)) == files


@pytest.mark.anyio
async def test_the_attack_requests_are_the_issues() -> None:
    requests = {request.kind.split(":")[0]: request for request in attack_requests(text_chars=10, instances=3)}
    assert list(requests) == ["bomb", "large", "small", "texts"]
    bomb = await _files(requests["bomb"].body, requests["bomb"].content_type)
    assert len(bomb) == 3 and len(bomb[0]) < 100_000
    assert Image.open(io.BytesIO(bomb[0])).size == (4096, 4096)
    large = await _files(requests["large"].body, requests["large"].content_type)
    sizes = [Image.open(io.BytesIO(data)).size for data in large]
    assert sum(w * h for w, h in sizes) == 16 * 1024 * 1024  # the default request pixel budget, exactly
    assert requests["texts"].path == "/v1/models/topics-oe/predict"
    assert requests["texts"].body.count(b'"text": "the quick "') == 3


@pytest.mark.anyio
async def test_attackers_count_each_kinds_statuses() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        if request.headers["content-type"].startswith("multipart/"):
            return httpx.Response(422)
        raise httpx.ConnectError("refused", request=request)

    requests = [
        AttackRequest("bomb", "/bomb", b"--b--\r\n", "multipart/form-data; boundary=b"),
        AttackRequest("texts", "/texts", b"{}", "application/json"),
    ]
    outcomes = await attack("http://test", 2, 0.05, requests, transport=httpx.MockTransport(answer))
    assert set(outcomes) == {"bomb", "texts"}
    assert set(outcomes["bomb"].statuses) == {"422"}
    assert set(outcomes["texts"].statuses) == {"ConnectError"}
    assert all(len(o.all_seconds()) == sum(o.statuses.values()) > 0 for o in outcomes.values())


def outcomes(**seconds_by_status: list[float]) -> Outcomes:
    result = Outcomes()
    for status, seconds in seconds_by_status.items():
        for elapsed in seconds:
            result.record(status.removeprefix("s"), elapsed)
    return result


RESULTS = [
    LevelResult(
        connections=8,
        seconds=2.0,
        rss_ready_bytes=250 * 2**20,
        rss_idle_bytes=300 * 2**20,
        rss_peak_bytes=400 * 2**20,
        lone=outcomes(s200=[0.01, 0.02, 0.03]),
        attackers={"bomb": outcomes(s422=[0.1, 0.2]), "texts": outcomes(s200=[0.5], s503=[0.002, 0.004])},
    ),
    LevelResult(
        connections=160,
        seconds=2.0,
        rss_ready_bytes=250 * 2**20,
        rss_idle_bytes=300 * 2**20,
        rss_peak_bytes=600 * 2**20,
        lone=outcomes(s200=[0.5, 1.5], s503=[0.001]),
        attackers={"bomb": outcomes(ReadTimeout=[60.0])},
    ),
]


def test_the_table_has_one_row_per_level() -> None:
    lines = table(RESULTS).splitlines()
    assert len(lines) == 2 + len(RESULTS)
    assert lines[2] == ("| 8 | 250 / 300 | 400 | 3 | 20 / 30 / 30 | 200: 3 | 2.5 | 200: 1, 422: 2, 503: 2 | 3 / 4 |")
    assert (
        lines[3]
        == "| 160 | 250 / 300 | 600 | 3 | 500 / 1,480 / 1,500 | 200: 2, 503: 1 | 0.5 | ReadTimeout: 1 | - / - |"
    )


def test_the_verdicts_check_the_issues_targets() -> None:
    first, second = verdicts(RESULTS).splitlines()
    assert first == (
        "- 8 attackers: RSS peak 400 MB < 512 MB: yes; every lone request 200 within 1 s: yes (max 30 ms, 200: 3); "
        "503s: 2, p99 4 ms"
    )
    assert second == (
        "- 160 attackers: RSS peak 600 MB < 512 MB: **no**; every lone request 200 within 1 s: **no** "
        "(max 1,500 ms, 200: 2, 503: 1); 503s: none (the in-flight bound was not reached)"
    )


def test_the_report_holds_the_facts_and_both_tables() -> None:
    text = render({"command": "`python -m bench.attack`", "machine": "2 x cpu"}, RESULTS)
    assert text.startswith("# The reliability issue's attack, measured")
    assert "- command: `python -m bench.attack`\n- machine: 2 x cpu\n" in text
    assert table(RESULTS) in text and verdicts(RESULTS) in text
    assert "| 8 | lone: 1 x 28^2 PNG | 200 | 3 | 20 / 30 / 30 |\n| 8 | bomb | 422 | 2 | 150 / 199 / 200 |" in text
    assert "| 8 | texts | 503 | 2 | 3 / 4 / 4 |\n| 160 | lone: 1 x 28^2 PNG | 200 | 2 |" in text
    assert Counter(RESULTS[0].attackers_total().statuses) == Counter({"200": 1, "422": 2, "503": 2})


def test_the_services_own_503_times_are_read_from_its_access_log() -> None:
    log = "\n".join(
        [
            '{"message": "service started", "loaded": 4}',
            '{"message": "request", "status": 503, "duration_ms": 1.5}',
            '{"message": "request", "status": 200, "duration_ms": 40.0}',
            "a line that is not JSON",
            '{"message": "request", "status": 503, "duration_ms": 0.25}',
        ]
    )
    assert refusal_seconds(log) == [0.0015, 0.00025]
    level = LevelResult(
        connections=40,
        seconds=2.0,
        rss_ready_bytes=250 * 2**20,
        rss_idle_bytes=300 * 2**20,
        rss_peak_bytes=400 * 2**20,
        lone=outcomes(s200=[0.01]),
        attackers={"bomb": outcomes(s503=[2.0, 4.0])},
        server_refusal_seconds=refusal_seconds(log),
    )
    assert verdicts([level]).endswith("503s: 2, p99 3,980 ms (in the service: p99 1 ms, max 2 ms)")
