"""Issue #40, "One redaction policy" and H5: one module (nli_finetune/redaction.py) decides what a secret is,
and every writer (training, the API client, the job runner, serving, the study, the report, the logs)
keeps both shapes of credential out of every file it writes and every line it prints."""

import json
import logging
import sys
import threading

import pytest

from nli_finetune.data_io import DataError
from nli_finetune.testing.fake_chat_server import FakeChatServer

# The two shapes the two old rules each missed one of: a name *ending* in PASSWD (training kept it) and a
# name *containing* KEY (the API path kept it); plus URL credentials and a secret query parameter.
DB_PASSWD = "dbpw-Zq81xLmN-4471"
SERVICE_KEY_ID = "svckid-77Hq2WvRt0"
API_KEY = "sk-local-9Fj3kQ0pXw"
URL_PASSWORD = "urlpw-Tg5Bn8Mc"
QUERY_KEY = "qkey-c9e1f3a7b2"
SECRETS = [DB_PASSWD, SERVICE_KEY_ID, API_KEY, URL_PASSWORD, QUERY_KEY]
FRAGMENTS = [s[:8] for s in SECRETS[:3]] + [s[-8:] for s in SECRETS[:3]]


@pytest.fixture
def secret_env(monkeypatch):
    monkeypatch.setenv("DB_PASSWD", DB_PASSWD)
    monkeypatch.setenv("SERVICE_KEY_ID", SERVICE_KEY_ID)
    monkeypatch.setenv("API_KEY", API_KEY)  # the local provider's key


def secret_url(base_url: str) -> str:
    """`base_url` with user:password@ and a secret query parameter, as a careless user writes it."""
    return base_url.replace("http://", f"http://alice:{URL_PASSWORD}@") + f"?api_key={QUERY_KEY}&tenant=t1"


def everything(secret_base: str) -> str:
    """A message holding every shape at once: both variables' values, an echoed fragment, the URL."""
    return f"db {DB_PASSWD} id {SERVICE_KEY_ID} echo {API_KEY[:12]}**** url {secret_base}"


def leaks(text: str) -> list[str]:
    return [s for s in SECRETS + FRAGMENTS if s in text]


def files_leaking(root, but) -> dict:
    """{file: the secrets it holds} of every file below `root` except those below `but` (the inputs)."""
    from nli_finetune.report_page import decode_data

    def text(path):
        content = path.read_text(errors="ignore")
        if path.suffix == ".html":  # the page's data is gzipped base64: read it as the browser does
            content += json.dumps(decode_data(content), ensure_ascii=False)
        return content
    found = {str(p): leaks(text(p)) for p in root.rglob("*") if p.is_file() and but not in p.parents}
    return {path: secrets for path, secrets in found.items() if secrets}


def test_redaction_one_policy_covers_both_name_shapes_urls_queries_and_fragments(secret_env):
    from nli_finetune.redaction import redact, redact_data, safe_url, secret_values
    assert DB_PASSWD in secret_values() and SERVICE_KEY_ID in secret_values()
    text = everything("http://alice:" + URL_PASSWORD + "@host/v1?api_key=" + QUERY_KEY + "&x=1")
    clean = redact(text)
    assert leaks(clean) == [], clean
    assert "http://***@host/v1?api_key=***&x=1" in clean and clean.startswith("db *** id ***")
    assert redact("Authorization: Bearer abc.def-123 sent") == "Authorization: Bearer *** sent"
    assert redact("a short one", extra=["abcd"]) == "a short one" and redact("key abcd", extra=["abcd"]) == "key ***"
    nested = {"settings": {"api_base": f"http://u:{URL_PASSWORD}@h/v1", "ids": (SERVICE_KEY_ID, 3)},
              DB_PASSWD: [None, 1.5, True]}
    assert redact_data(nested) == {"settings": {"api_base": "http://***@h/v1", "ids": ["***", 3]},
                                   "***": [None, 1.5, True]}
    assert safe_url(f"https://u:p@api.example.com/v1?key={QUERY_KEY}&sig=abc&x=1") == "https://api.example.com/v1?x=1"


def test_redaction_leaves_ordinary_text_and_paths_alone(monkeypatch):
    from nli_finetune.redaction import redact
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")  # too short to be a credential
    monkeypatch.setenv("SSH_KEY_FILE", "/home/someone/.ssh/id_ed25519")  # a path: hidden whole only
    text = "see /home/someone/.ssh/known_hosts, false, http://host:8000/v1?tenant=t1&sort=key"
    assert redact(text) == text
    assert redact("key at /home/someone/.ssh/id_ed25519") == "key at ***"


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from scripts.make_tiny_model import make_tiny_model
    return make_tiny_model("mistral", tmp_path_factory.mktemp("redaction") / "tiny-mistral")


def write_study(folder, api_base: str):
    """A study config with one untrained arm evaluated through the API (`api_base`), in `folder`."""
    folder.mkdir()
    eval_file = folder / "eval.csv"
    eval_file.write_text("id,premise,hypothesis,label\n" + "".join(
        f"p{i},Premise {i} [mode:ok],Hypothesis {i} [label:{i % 2}],{i % 2}\n" for i in range(4)))
    config = folder / "study_config.py"
    arm = {"name": "untrained", "train": None,
           "eval": {"task": "nli", "backend": "openai", "api": "local", "api_base": api_base,
                    "model_name": "teacher", "timeout": 5}}
    config.write_text(f"name = 'secrets'\nmodel = 'teacher'\neval_file = {str(eval_file)!r}\n"
                      f"train_config = 'tiny_cpu.py'\nbaseline = 'untrained'\narms = [{arm!r}]\n")
    return config


def test_redaction_no_writer_writes_or_prints_a_secret(secret_env, tmp_path, tiny_model, capsys, caplog, monkeypatch):
    """Both shapes through every writer: training (config, results, logs, W&B's command line), the API
    client, the job runner's failures file and its error line, serving's dry run, the study (H5:
    stages.json, the stage log and its command line, study.log, the tables, report.html) and the report."""
    from evaluate.report import main as report_main
    from nli_finetune import job_runner
    from nli_finetune.llm_api import ApiError, ChatClient
    from scripts import serve, study
    from tests.conftest import run_train
    from train.show_config import main as show_config
    caplog.set_level(logging.INFO)
    printed = []

    with FakeChatServer() as server:
        base = secret_url(server.base_url)
        message = everything(base)

        # training: a pasted credential in config values and the command line
        argv_before = list(sys.argv)
        overrides = ["--wandb_project", f"p-{SERVICE_KEY_ID}-{DB_PASSWD}", "--wandb_run_name", f"from {base}"]
        try:
            sys.argv[:] = ["train/train_sft.py", *overrides]  # as the command line W&B records
            code, out = run_train(tiny_model, tmp_path / "train", "--max_steps", "2", *overrides)
            assert code == 0
            assert sys.argv[0] == "train/train_sft.py" and leaks(" ".join(sys.argv)) == []
        finally:
            sys.argv[:] = argv_before
        assert show_config(["tiny_cpu.py", "--wandb_run_name", message]) == 0
        logging.getLogger("train.train_sft").warning("a log line: %s", message)

        # the API client: a server echoing the key in use
        client = ChatClient(base_url=server.base_url, api_key=API_KEY, model="m", max_attempts=1)
        with pytest.raises(ApiError) as error:
            client.chat([{"role": "user", "content": "Hypothesis: h [mode:echo401]"}])
        printed.append(str(error.value))

        # the job runner: a failed item's reason, and a run-ending error line
        def work(item):
            if item["id"] == "a":
                raise ApiError(message, kind="refused")
            return {"id": item["id"]}, {}
        items = [{"id": i, "premise": "p", "hypothesis": "h"} for i in ("a", "b")]
        summary = job_runner.run_jobs(items, work, tmp_path / "jobs" / "out.jsonl", source="in.csv", workers=1,
                                      stop=threading.Event(), model="m")
        assert (summary.done, summary.failed) == (1, 1)

        def fails():
            raise DataError(message)
        assert job_runner.run_job_script("gen", fails) == 2

        # serving: a key passed as an extra vLLM flag (printed in the dry run's command line)
        assert serve.main(["--model", str(tiny_model), "--dry-run", "--api-key", DB_PASSWD]) == 0

        # the study (H5): an arm whose eval api_base carries user:pass and ?api_key=
        config = write_study(tmp_path / "inputs", base)  # the one place the secrets are meant to be
        assert study.main(["--config", str(config), "--output_dir", str(tmp_path / "study")]) == 0
        stages = json.loads((tmp_path / "study" / "arms" / "untrained" / "stages.json").read_text())
        assert stages["eval"]["inputs"]["settings"]["api_base"].startswith("http://***@")
        assert study.main(["--config", str(config), "--output_dir", str(tmp_path / "study")]) == 0
        assert "eval skipped (finished, inputs unchanged)" in (tmp_path / "study" / "study.log").read_text()

        # the report: a title holding every shape
        eval_json = tmp_path / "study" / "arms" / "untrained" / "eval.json"
        assert report_main([str(eval_json), "--output", str(tmp_path / "page.html"), "--title", message]) == 0

    captured = capsys.readouterr()
    lines = (captured.out + captured.err + caplog.text + "\n".join(printed)).splitlines()
    assert [line for line in lines if leaks(line)] == []
    assert files_leaking(tmp_path, but=tmp_path / "inputs") == {}
