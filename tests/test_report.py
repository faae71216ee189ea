"""The results page (report_page.py, python -m evaluate.report): the data it embeds, bad input, and the page
itself in a real headless Chromium (Debian's package; `make test` installs it)."""

import base64
import csv
import fcntl
import json
import os
import random
import select
import shutil
import subprocess
import time
from types import SimpleNamespace

import pytest

from evaluate.report import main as report_main
from nli_finetune.calibration import expected_calibration_error
from nli_finetune.data_io import DataError
from nli_finetune.metrics import classification_metrics
from nli_finetune.report_page import DATA_OPEN, decode_data, page_data, read_runs, render_page
from nli_finetune.results import score_record, summarize, write_outputs
from prompts import TASKS
from tests.conftest import REPO_ROOT

INJECTED = '</script><script>window.pwned = 1</script><img src=x onerror="window.pwned = 2">'


def pairs(limit=None):
    with open(REPO_ROOT / "data/sample/dev_300.csv", encoding="utf-8") as f:
        return list(csv.DictReader(f))[:limit]


def make_run(path, rows, skill: float, seed: int, *, probs=False, task=TASKS["nli"], ids=None, samples_per_s=4.0):
    """A sample_model results file built the way sample_model builds one (results.score_record), with
    wrong answers, parse failures, a run cut at max tokens and an answer that holds a <script>."""
    rng = random.Random(seed)
    records = []
    for number, row in enumerate(rows):
        truth = int(row["label"])
        item = SimpleNamespace(id=str(ids[number] if ids else number), true_label=truth,
                               inputs={"premise": row["premise"], "hypothesis": row["hypothesis"]})
        label = truth if rng.random() < skill else 1 - truth
        roll = rng.random()
        text = (f"I am not sure. {INJECTED}" if roll < 0.08 else
                f'{{"thought_process": "step 1: {row["hypothesis"][:40]}", "predicted_label": {label}}}')
        record = score_record(item, {"text": text, "stop_reason": "length" if roll < 0.04 else "eos",
                                     "generated_tokens": 30}, task)
        if probs:
            p = 0.5 + 0.5 * rng.random()
            top = record["predicted_label"] if record["predicted_label"] is not None else 0
            record["label_probs"] = {str(top): p, str(1 - top): 1 - p}
        records.append(record)
    settings = {"model_id": path.stem, "task": task.name, "has_labels": True}
    write_outputs(path, path.with_suffix(".csv"), settings, summarize(records, task, True),
                  {"samples_per_s": samples_per_s}, records)
    return records


@pytest.fixture
def two_runs(tmp_path):
    rows = pairs(40)
    base = make_run(tmp_path / "base.json", rows, 0.5, seed=1)
    tuned = make_run(tmp_path / "tuned.json", rows, 0.8, seed=2, probs=True)
    return tmp_path, base, tuned


def test_page_data_holds_each_runs_metrics_confusion_and_calibration(two_runs):
    folder, base, tuned = two_runs
    data = page_data(read_runs(folder / "base.json") + read_runs(folder / "tuned.json"), bootstrap=50)
    assert [r["name"] for r in data["runs"]] == ["base", "tuned"]
    for summary, records in zip(data["runs"], (base, tuned)):
        expected = summarize(records, TASKS["nli"], True)
        assert summary["accuracy"] == pytest.approx(expected["accuracy"])
        assert summary["f1_macro"] == pytest.approx(expected["f1_macro"])
        assert summary["parse_rate"] == pytest.approx(expected["parse_rate"])
        assert summary["stop_rate"] == pytest.approx(expected["stop_rate"])
        low, high = summary["accuracy_ci"]
        assert low <= summary["accuracy"] <= high
        matrix = classification_metrics([r["true_label"] for r in records], [r["predicted_label"] for r in records],
                                         [0, 1])["confusion_matrix"]
        assert summary["confusion"]["counts"] == [list(row.values()) for row in matrix.values()]
        assert summary["confusion"]["cols"] == ["0", "1", "null"]
    assert "reliability" not in data["runs"][0] and "ece" not in data["runs"][0]
    confidence = [max(r["label_probs"].values()) for r in tuned]
    assert data["examples"]["conf"][1] == confidence
    assert data["examples"]["conf"][0] == [None] * len(base)
    assert data["runs"][1]["ece"] == pytest.approx(expected_calibration_error(confidence, [r["correct"] for r in tuned]))
    assert sum(b["size"] for b in data["runs"][1]["reliability"]) == len(tuned)
    examples = data["examples"]
    assert examples["id"] == [r["id"] for r in base]
    assert examples["inputs"] == [[r["premise"] for r in base], [r["hypothesis"] for r in base]]
    assert examples["gold"] == [str(r["true_label"]) for r in base]
    assert examples["pred"][1] == [None if r["predicted_label"] is None else str(r["predicted_label"]) for r in tuned]
    assert examples["raw"][0] == [r["raw_output"] for r in base]
    assert data["input_fields"] == ["premise", "hypothesis"] and data["labels"] == ["0", "1"]


def test_the_page_embeds_its_data_compressed_and_no_answer_can_close_the_script(two_runs):
    folder, base, _ = two_runs
    data = page_data(read_runs(folder / "base.json") + read_runs(folder / "tuned.json"), title="<b>x</b>", bootstrap=10)
    page = render_page(data)
    assert any(INJECTED in r["raw_output"] for r in base)
    assert decode_data(page) == json.loads(json.dumps(data))
    assert page.count("<script") == 2 and "window.pwned" not in page
    assert "<title>&lt;b&gt;x&lt;/b&gt;</title>" in page
    assert "http://" not in page.replace("http://www.w3.org/2000/svg", "") and "https://" not in page  # offline


def test_low_a_title_holding_the_placeholders_stays_text_and_the_data_is_written_without_nan(two_runs):
    folder, _, _ = two_runs
    data = page_data(read_runs(folder / "base.json"), title="a @DATA@ b @TITLE@", bootstrap=10)
    page = render_page(data)
    assert "<title>a @DATA@ b @TITLE@</title>" in page and page.count(DATA_OPEN) == 1
    assert decode_data(page)["title"] == "a @DATA@ b @TITLE@"
    with pytest.raises(ValueError):  # M5: the backstop: a NaN never reaches the page's JSON.parse
        render_page(data | {"note": float("nan")})


def test_low_a_prompt_not_scored_past_the_context_shows_as_such_not_as_cut_at_max_tokens(tmp_path):
    record = {"id": "1", "premise": "p", "hypothesis": "h", "raw_output": "", "predicted_label": None,
              "stop_reason": "length", "true_label": 0, "correct": False, "over_context": "prompt of 40 tokens ..."}
    (tmp_path / "r.json").write_text(json.dumps({"settings": {"task": "nli_label"}, "records": [record]}))
    data = page_data(read_runs(tmp_path / "r.json"), bootstrap=10)
    assert data["examples"]["stop"] == [["context"]] and data["runs"][0]["stop_rate"] == 0
    assert data["input_fields"] == ["premise", "hypothesis"]


def test_runs_align_by_id_and_runs_of_different_inputs_are_refused(tmp_path):
    rows = pairs(12)
    make_run(tmp_path / "a.json", rows, 0.5, seed=1)
    make_run(tmp_path / "b.json", rows[4:], 0.5, seed=2, ids=range(4, 12))
    data = page_data(read_runs(tmp_path / "a.json") + read_runs(tmp_path / "b.json"), bootstrap=10)
    assert data["examples"]["id"] == [str(i) for i in range(4, 12)]
    assert data["note"] == "aligned by id: 8 examples are in every run (runs have 12, 8)"
    assert data["runs"][0]["n"] == 8
    make_run(tmp_path / "other.json", pairs(24)[12:], 0.5, seed=3)  # ids 0..11 again, other pairs
    with pytest.raises(DataError, match="example 0: field 'inputs' differs"):
        page_data(read_runs(tmp_path / "a.json") + read_runs(tmp_path / "other.json"))
    for folder in ("x", "y"):
        (tmp_path / folder).mkdir()
        make_run(tmp_path / folder / "dev.json", rows, 0.5, seed=5)
    names = [r["name"] for r in page_data(read_runs(tmp_path / "x/dev.json") + read_runs(tmp_path / "y/dev.json"),
                                          bootstrap=10)["runs"]]
    assert names == ["x/dev", "y/dev"]
    make_run(tmp_path / "far.json", rows, 0.5, seed=4, ids=range(100, 112))
    with pytest.raises(DataError, match="no example id in common"):
        page_data(read_runs(tmp_path / "a.json") + read_runs(tmp_path / "far.json"))


def test_a_confidence_token_file_is_a_run_per_validation_set(tmp_path):
    records = [{"id": str(i), "domain": "READ", "answer": f"yes {i}", "predicted_token": [None, "C", "U"][i % 3],
                "expected_token": "C" if i % 2 else "U", "answer_correct": bool(i % 2), "token_correct": False,
                "p_confident": i / 10} for i in range(10)]
    (tmp_path / "conf.json").write_text(json.dumps({"data/boolq_val.jsonl": {"metrics": {}, "records": records}}))
    data = page_data(read_runs(tmp_path / "conf.json"), bootstrap=10)
    run = data["runs"][0]
    assert run["name"] == "conf:boolq_val" and run["accuracy"] == 0.5 and run["parse_rate"] == pytest.approx(0.6)
    assert run["confusion"]["of"] == "token" and run["confusion"]["rows"] == ["C", "U"]
    assert run["ece"] == pytest.approx(expected_calibration_error([i / 10 for i in range(10)],
                                                                  [bool(i % 2) for i in range(10)]))
    assert data["examples"]["conf"][0] == [i / 10 for i in range(10)]


def test_a_free_text_run_has_answers_but_no_labels_to_parse(tmp_path):
    records = [score_record(SimpleNamespace(id=str(i), inputs={"prompt": f"say {i}"}, true_label=f"ref {i}"),
                            {"text": f"answer {i}", "stop_reason": "eos", "generated_tokens": 2}, TASKS["free_text"])
               for i in range(4)]
    write_outputs(tmp_path / "t.json", tmp_path / "t.csv", {"task": "free_text", "model_id": "m"}, {}, {}, records)
    data = page_data(read_runs(tmp_path / "t.json"), bootstrap=10)
    assert data["runs"][0]["parse_rate"] is None and "confusion" not in data["runs"][0] and data["labels"] == []
    assert data["examples"]["pred"] == [["free text"] * 4] and data["examples"]["gold"][1] == "ref 1"
    assert data["input_fields"] == ["prompt"]


@pytest.mark.parametrize("content, message", [
    ("premise,hypothesis\na,b\n", "cannot read"),
    (json.dumps([{"id": 1}]), "not a results file"),
    (json.dumps({"settings": {"task": "nli"}, "metrics": {}, "records": []}), "no records (an empty run)"),
    (json.dumps({"settings": {"task": "nli"}, "records": [{"id": 1}]}), "record 1: field 'raw_output'"),
    ('{"settings": {"task": "nli"}, "records": [{"id": 1, "raw_output": "", "label_probs": {"0": NaN, "1": 2}}]}',
     "record 1: field 'label_probs': nan is not a probability"),
    (json.dumps({"settings": {"task": "nli"}, "records": [{"id": 1, "raw_output": ""}, {"id": 1, "raw_output": ""}]}),
     "record 2: field 'id': '1' appears twice"),
])
def test_bad_input_is_one_line_and_exit_2_and_writes_nothing(tmp_path, capsys, content, message):
    assert_refused_in_one_line(tmp_path, capsys, content, message)


@pytest.mark.parametrize("content, message", [
    # M5: every number the page reads is a finite number of the right type (NaN broke the page's JSON)
    ('{"settings": {"task": "nli"}, "timing": {"samples_per_s": NaN}, "records": [{"id": 1, "raw_output": ""}]}',
     "field 'timing.samples_per_s': nan is not a finite number"),
    ('{"settings": {"task": "nli"}, "timing": {"samples_per_s": Infinity}, "records": [{"id": 1, "raw_output": ""}]}',
     "field 'timing.samples_per_s': inf is not a finite number"),
    (json.dumps({"settings": {"task": "nli"}, "timing": {"samples_per_s": "fast"}, "records": [{"id": 1, "raw_output": ""}]}),
     "field 'timing.samples_per_s': 'fast' is not a finite number"),
    (json.dumps({"settings": {"task": "nli"}, "timing": {"samples_per_s": True}, "records": [{"id": 1, "raw_output": ""}]}),
     "field 'timing.samples_per_s': True is not a finite number"),
    (json.dumps({"settings": {"task": "nli"}, "timing": {"samples_per_s": -3}, "records": [{"id": 1, "raw_output": ""}]}),
     "field 'timing.samples_per_s': -3 is not a finite number"),
    ('{"settings": {"task": "nli"}, "records": [{"id": 1, "raw_output": "", "correct": NaN}]}',
     "record 1: field 'correct': nan is not true, false or null"),
    (json.dumps({"settings": {"task": "nli"}, "records": [{"id": 1, "raw_output": "", "correct": "yes"}]}),
     "record 1: field 'correct': 'yes' is not true, false or null"),
    (json.dumps({"v.jsonl": {"metrics": {}, "records": [{"id": 1, "answer_correct": 1}]}}),
     "record 1: field 'answer_correct': 1 is not true, false or null"),
    # LOW: a non-number probability or a timing that is not an object: one line, not a traceback
    (json.dumps({"settings": {"task": "nli"}, "records": [{"id": 1, "raw_output": "", "label_probs": {"0": "x", "1": 0.5}}]}),
     "record 1: field 'label_probs': 'x' is not a probability"),
    (json.dumps({"settings": {"task": "nli"}, "timing": [1, 2], "records": [{"id": 1, "raw_output": ""}]}),
     "field 'timing': [1, 2] is not an object"),
    (json.dumps({"settings": {"task": ["nli"]}, "records": [{"id": 1, "raw_output": ""}]}),
     "field 'settings.task': ['nli'] is not a task name"),
    # issue 44: a missing task is an error, never the default "nli"
    (json.dumps({"settings": {}, "records": [{"id": 1, "raw_output": ""}]}), "field 'settings.task': None is not a task name"),
])
def test_m5_and_low_nan_infinity_strings_and_mistyped_fields_are_one_line_and_exit_2(tmp_path, capsys, content,
                                                                                     message):
    assert_refused_in_one_line(tmp_path, capsys, content, message)


def assert_refused_in_one_line(tmp_path, capsys, content, message):
    make_run(tmp_path / "good.json", pairs(5), 0.5, seed=1)
    (tmp_path / "bad.json").write_text(content)
    out = tmp_path / "report.html"
    assert report_main([str(tmp_path / "good.json"), str(tmp_path / "bad.json"), "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and "bad.json" in err
    assert not out.exists()


def test_the_command_refuses_runs_of_other_inputs_and_an_output_that_is_an_input(tmp_path, capsys):
    make_run(tmp_path / "a.json", pairs(6), 0.5, seed=1)
    make_run(tmp_path / "b.json", pairs(12)[6:], 0.5, seed=2)
    before = (tmp_path / "a.json").read_bytes()
    assert report_main([str(tmp_path / "a.json"), str(tmp_path / "b.json"), "--output", str(tmp_path / "r.html")]) == 2
    assert "runs of different inputs" in capsys.readouterr().err and not (tmp_path / "r.html").exists()
    assert report_main([str(tmp_path / "a.json"), "--output", str(tmp_path / "a.json")]) == 2
    assert "--output" in (err := capsys.readouterr().err) and "same file" in err
    assert (tmp_path / "a.json").read_bytes() == before
    assert report_main([str(tmp_path / "a.json"), "--output", str(tmp_path / "r.html"), "--bootstrap", "20"]) == 0
    assert "1 run(s), 6 examples" in capsys.readouterr().out
    assert decode_data((tmp_path / "r.html").read_text())["runs"][0]["n"] == 6


# --- the page in a real browser -------------------------------------------------------------------------------

BROWSER_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--hide-scrollbars"]


class Browser:
    """Headless Chromium driven through the DevTools protocol over --remote-debugging-pipe (the browser
    reads commands on fd 3 and answers on fd 4): no driver, no port."""

    def __init__(self, executable, profile):
        to_browser, self._out = os.pipe()
        self._in, from_browser = os.pipe()

        def on_fds_3_and_4():
            high_in = fcntl.fcntl(to_browser, fcntl.F_DUPFD, 10)
            high_out = fcntl.fcntl(from_browser, fcntl.F_DUPFD, 10)
            os.dup2(high_in, 3)
            os.dup2(high_out, 4)
        # close_fds=False keeps only inheritable fds: 0-2 and the two dup2 made (Python's own are not)
        self.proc = subprocess.Popen([executable, *BROWSER_FLAGS, f"--user-data-dir={profile}",
                                      "--remote-debugging-pipe", "about:blank"], preexec_fn=on_fds_3_and_4,
                                     close_fds=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_browser)
        os.close(from_browser)
        self._buffer, self._last_id, self.events = b"", 0, []
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        self.send("Runtime.enable", page=True)
        self.send("Emulation.setDeviceMetricsOverride", {"width": 1280, "height": 1000, "deviceScaleFactor": 1,
                                                         "mobile": False}, page=True)

    def send(self, method, params=None, page=False, timeout=60):
        self._last_id += 1
        message = {"id": self._last_id, "method": method, "params": params or {}}
        if page:
            message["sessionId"] = self.session
        os.write(self._out, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            while b"\0" in self._buffer:
                raw, self._buffer = self._buffer.split(b"\0", 1)
                reply = json.loads(raw)
                if reply.get("id") == self._last_id:
                    if "error" in reply:
                        raise RuntimeError(f"{method}: {reply['error']}")
                    return reply["result"]
                self.events.append(reply)
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._in], [], [], left)[0]:
                raise TimeoutError(f"{method}: no answer from the browser in {timeout}s")
            chunk = os.read(self._in, 1 << 20)
            if not chunk:
                raise RuntimeError("the browser closed its pipe")
            self._buffer += chunk

    def evaluate(self, expression):
        result = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                "awaitPromise": True}, page=True)
        if "exceptionDetails" in result:
            raise RuntimeError(result["exceptionDetails"])
        return result["result"].get("value")

    def open(self, url, timeout=30) -> dict:
        """Load `url` in a fresh document and wait until the page has rendered; its reportState."""
        self.send("Page.navigate", {"url": "about:blank"}, page=True)
        self.send("Page.navigate", {"url": url}, page=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.evaluate("document.body !== null && document.body.dataset.ready === '1'"):
                return self.evaluate("window.reportState")
            time.sleep(0.02)
        raise TimeoutError(f"{url}: the page did not render in {timeout}s")

    def errors(self) -> list:
        return [e for e in self.events if e.get("method") == "Runtime.exceptionThrown"
                or (e.get("method") == "Runtime.consoleAPICalled" and e["params"]["type"] == "error")]

    def screenshot(self, path, height=1000) -> None:
        self.send("Emulation.setDeviceMetricsOverride", {"width": 1280, "height": height, "deviceScaleFactor": 1,
                                                         "mobile": False}, page=True)
        path.write_bytes(base64.b64decode(self.send("Page.captureScreenshot", {"format": "png"}, page=True)["data"]))

    def close(self) -> None:
        try:
            self.send("Browser.close", timeout=10)
            self.proc.wait(10)
        except (RuntimeError, TimeoutError, OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()
        os.close(self._out)
        os.close(self._in)


@pytest.fixture
def browser(tmp_path):
    # CHROMIUM: the browser `make test CHROMIUM=/path` names (exported by the Makefile), else the one on PATH
    executable = shutil.which(os.environ.get("CHROMIUM") or "chromium") or shutil.which("chromium-browser")
    if executable is None:
        if os.environ.get("CI"):  # CI must run this test: `make test` installs Debian's chromium first
            pytest.fail("chromium is not installed (make test installs it: make /usr/bin/chromium)")
        pytest.skip("chromium is not installed (apt-get install chromium, make test, or CHROMIUM=/path/to/chromium)")
    browser = Browser(executable, tmp_path / "profile")
    yield browser
    browser.close()


def expected_rows(runs: list[list[dict]], show="all", per_run=(), gold=None, q="") -> int:
    """How many examples a filter keeps, computed from the records (not from the page's data)."""
    kept = 0
    for number, first in enumerate(runs[0]):
        records = [run[number] for run in runs]
        predictions = [r["predicted_label"] for r in records]
        if (show == "wrong-any" and not any(r["correct"] is False for r in records)) or \
                (show == "disagree" and len(set(predictions)) < 2) or \
                (show == "parse-any" and None not in predictions):
            continue
        wanted = {"right": lambda r: r["correct"] is True, "wrong": lambda r: r["correct"] is False,
                  "parse": lambda r: r["predicted_label"] is None}
        if any(not wanted[f](records[k]) for k, f in per_run):
            continue
        if gold is not None and first["true_label"] != gold:
            continue
        text = "\n".join([first["id"], first["premise"], first["hypothesis"], *(r["raw_output"] for r in records)])
        if q.lower() not in text.lower():
            continue
        kept += 1
    return kept


@pytest.mark.slow
def test_the_page_in_chromium_filters_escapes_and_keeps_its_view_in_the_url(tmp_path, browser):
    rows = pairs(90)  # fewer than a page (100 rows): every matching row is on screen
    runs = [make_run(tmp_path / "teacher.json", rows, 0.85, seed=5),
            make_run(tmp_path / "student.json", rows, 0.6, seed=6, probs=True),
            make_run(tmp_path / "ablation.json", rows, 0.7, seed=7, probs=True)]
    page = tmp_path / "report.html"
    assert report_main([str(tmp_path / f"{n}.json") for n in ("teacher", "student", "ablation")]
                       + ["--output", str(page), "--bootstrap", "50"]) == 0
    views = [("", {}), ("show=wrong-any", {"show": "wrong-any"}), ("show=disagree", {"show": "disagree"}),
             ("show=parse-any", {"show": "parse-any"}), ("gold=1", {"gold": 1}), ("gold=0", {"gold": 0}),
             ("r0=right&r1=wrong", {"per_run": [(0, "right"), (1, "wrong")]}),
             ("r1=wrong&r2=right", {"per_run": [(1, "wrong"), (2, "right")]}),
             ("r2=parse", {"per_run": [(2, "parse")]}), ("q=WOMAN", {"q": "woman"}),
             ("show=wrong-any&gold=1&q=the", {"show": "wrong-any", "gold": 1, "q": "the"}),
             ("q=window.pwned", {"q": "window.pwned"})]
    for fragment, view in views:
        state = browser.open(f"{page.as_uri()}#{fragment}")
        shown = browser.evaluate("document.querySelectorAll('#examples tbody tr').length")
        expected = expected_rows(runs, **view)
        assert state["count"] == shown == expected, fragment
        assert browser.evaluate("document.getElementById('count').textContent") == f"{expected} of 90 examples"
    assert 0 < expected_rows(runs, q="window.pwned") < 90
    assert browser.evaluate("window.pwned === undefined && document.querySelectorAll('#examples img').length === 0")
    assert INJECTED in browser.evaluate("document.getElementById('examples').innerText")
    # sorting by confidence: the least confident answer of the student comes first
    browser.open(f"{page.as_uri()}#sort=c1-asc")
    first_p = browser.evaluate("document.querySelector('#examples tbody tr td:nth-child(6) .small').textContent")
    assert first_p.strip() == f"p {min(max(r['label_probs'].values()) for r in runs[1]):.2f}"
    # a control changes the view and the URL, so the link reopens the same view
    browser.open(page.as_uri())
    browser.evaluate("(() => { const s = document.getElementById('show'); s.value = 'disagree';"
                     " s.dispatchEvent(new Event('change')); })()")
    assert browser.evaluate("location.hash") == "#show=disagree"
    assert browser.evaluate("window.reportState.count") == expected_rows(runs, show="disagree")
    assert not browser.errors()
    shot = tmp_path / "report.png"
    browser.screenshot(shot)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000


def scale_run(path, pairs_pool, thoughts, run: int, n: int) -> None:
    """n records with real text: NLI pairs and teacher chains of thought (answers as long as a CoT run's)."""
    rng = random.Random(run)
    records = []
    for i in range(n):
        pair = pairs_pool[i % len(pairs_pool)]
        label = rng.choice([0, 1]) if rng.random() > 0.03 else None
        answer = json.dumps({"thought_process": thoughts[(7 * i + 331 * run) % len(thoughts)], "predicted_label": label})
        records.append({"id": str(i), "premise": pair["premise"], "hypothesis": pair["hypothesis"],
                        "raw_output": answer, "predicted_label": label, "extraction_method": "json",
                        "json_objects": 1, "stop_reason": "eos", "generated_tokens": 150, "prompt_tokens_trimmed": 0,
                        "true_label": int(pair["label"]), "correct": label == int(pair["label"]),
                        "label_probs": {"0": (p := rng.random()), "1": 1 - p}})
    path.write_text(json.dumps({"settings": {"task": "nli", "model_id": f"run{run}"}, "metrics": {},
                                "timing": {"samples_per_s": 5.0}, "records": records}))


@pytest.mark.slow
def test_ten_thousand_examples_by_three_runs_stay_under_10_mb_and_load_quickly(tmp_path, browser):
    with open(REPO_ROOT / "data/sample/dev_train_3000.csv", encoding="utf-8") as f:
        pool = list(csv.DictReader(f))
    with open(REPO_ROOT / "data/sample/teacher_cot_1000.csv", encoding="utf-8") as f:
        thoughts = [row["thoughts"] for row in csv.DictReader(f)]
    files = [tmp_path / f"run{k}.json" for k in range(3)]
    for k, path in enumerate(files):
        scale_run(path, pool, thoughts, k, 10_000)
    page = tmp_path / "report.html"
    started = time.monotonic()
    assert report_main([*map(str, files), "--output", str(page), "--bootstrap", "100"]) == 0
    build_seconds = time.monotonic() - started
    size_mb = page.stat().st_size / 1e6
    loads = [browser.open(page.as_uri())["readyMs"] / 1000 for _ in range(3)]
    state = browser.open(f"{page.as_uri()}#show=disagree&sort=c0-desc&q=step")
    print(f"\n10,000 x 3 page: {size_mb:.2f} MB (records {sum(f.stat().st_size for f in files) / 1e6:.1f} MB), "
          f"built in {build_seconds:.1f}s, interactive in {', '.join(f'{s:.2f}' for s in loads)} s")
    assert size_mb < 10
    assert min(loads) < 4  # measured ~1 s on a 2-core CPU (docs/report.md); generous for a loaded CI machine
    assert state["shown"] == 100 and 0 < state["count"] < 10_000
    assert not browser.errors()
