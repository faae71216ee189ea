"""The shell wrappers: exact docker commands (--dry-run), host runs, exit status."""

import json
import os
import shutil
import subprocess

import pytest

from tests.conftest import REPO_ROOT

# issue 41: the container runs as the calling user, with a HOME any uid can write (the volumes are host folders)
RUN = (f"docker run --rm --ipc=host --user {os.getuid()}:{os.getgid()} -e HOME=/tmp "
       "-e HF_HOME=/home/app/.cache/huggingface")
VOLUMES = (f"-v {REPO_ROOT}/data:/app/data -v {REPO_ROOT}/models:/app/models -v {REPO_ROOT}/results:/app/results "
           f"-v {REPO_ROOT}/train/configs:/app/train/configs:ro -v /hf-cache:/home/app/.cache/huggingface")


def dry_run(script, *args, **more_env):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NCCL_", "TORCH_NCCL_", "GLOO_"))}
    env |= dict(HF_HOME="/hf-cache", PREFLIGHT="0", **more_env)  # the command only (the plan: below)
    proc = subprocess.run(["bash", script, "--dry-run", *args], cwd=REPO_ROOT, capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


@pytest.mark.parametrize("gpu_args,gpus_flag,launcher", [
    (["--gpu", "1"], "--gpus device=1", "python"),
    (["--gpus", "0,1"], '--gpus \'"device=0,1"\'', "torchrun --standalone --nproc_per_node 2"),
    (["--all-gpus"], "--gpus all", "python"),
])
def test_training_wrapper_docker_commands(gpu_args, gpus_flag, launcher):
    if (REPO_ROOT / ".env").exists():
        pytest.skip("a local .env adds --env-file to the command")
    command = dry_run("run_training.sh", "--docker", "--config", "ablation2.py", *gpu_args, "--learning_rate", "1e-4")
    assert command == (f"{RUN} {gpus_flag} {VOLUMES} nli-finetune:latest "
                       f"{launcher} -m train.train_sft --config ablation2.py --learning_rate 1e-4")


@pytest.mark.parametrize("gpu_args,gpus_flag", [(["--gpu", "1"], "--gpus device=1"),
                                                (["--gpus", "0,1"], '--gpus \'"device=0,1"\''),
                                                (["--all-gpus"], "--gpus all")])
def test_inference_wrapper_docker_commands(gpu_args, gpus_flag):
    if (REPO_ROOT / ".env").exists():
        pytest.skip("a local .env adds --env-file to the command")
    for script in ("evaluate/run_inference.sh", "run_inference.sh"):
        command = dry_run(script, "--docker", "--model", "models/X", "--data", "data/dev.csv", *gpu_args,
                          "--batch_size", "16", "--max_new_tokens", "256", "--output", "results/x.json",
                          "--backend", "hf")
        assert command == (f"{RUN} {gpus_flag} {VOLUMES} nli-finetune:latest python -m "
                           "evaluate.sample_model --model_id models/X --test_file data/dev.csv --batch_size 16 "
                           "--max_new_tokens 256 --output_file results/x.json --backend hf")


def test_host_runs_select_the_gpu_with_cuda_visible_devices():
    assert dry_run("run_training.sh", "--local", "--gpu", "1", "--config", "x.py") == \
        "env CUDA_VISIBLE_DEVICES=1 python -m train.train_sft --config x.py"
    assert dry_run("run_training.sh", "--local", "--gpus", "2,3", "--config", "x.py") == \
        "env CUDA_VISIBLE_DEVICES=2,3 torchrun --standalone --nproc_per_node 2 -m train.train_sft --config x.py"


def test_without_a_docker_engine_it_runs_on_the_host_and_says_so():
    env = dict(os.environ, PATH="/usr/bin:/bin", PREFLIGHT="0")  # no docker client, no venv
    proc = subprocess.run(["bash", "run_training.sh", "--dry-run", "--config", "x.py"], cwd=REPO_ROOT,
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 0 and "no Docker engine" in proc.stderr
    assert proc.stdout.strip() == "python -m train.train_sft --config x.py"


def test_exit_status_is_the_scripts_and_help_works():
    env = dict(os.environ, PATH=f"{REPO_ROOT / '.venv/bin'}:{os.environ['PATH']}")
    bad = subprocess.run(["bash", "run_training.sh", "--local", "--config", "tiny_cpu.py", "--lerning_rate", "1"],
                         cwd=REPO_ROOT, capture_output=True, text=True, env=env)
    assert bad.returncode == 2 and "learning_rate" in bad.stderr
    for script in ("run_training.sh", "run_inference.sh", "evaluate/run_inference.sh"):
        helped = subprocess.run(["bash", script, "--help"], cwd=REPO_ROOT, capture_output=True, text=True)
        assert helped.returncode == 0 and "--dry-run" in helped.stdout


def test_dockerfile_runs_as_non_root_and_bakes_in_no_secrets():
    dockerfile = (REPO_ROOT / "Dockerfile").read_text().splitlines()
    base = next(line for line in dockerfile if line.startswith("ARG BASE_IMAGE="))
    assert base.count(":") == 1 and "FROM ${BASE_IMAGE}" in dockerfile  # a tagged default base
    users = [line.split()[1] for line in dockerfile if line.startswith("USER ")]
    assert users and users[-1].split(":")[0] not in ("0", "root")
    for line in dockerfile:
        if line.startswith(("ENV", "ARG")):
            assert not any(word in line.upper() for word in ("KEY", "TOKEN", "SECRET", "PASSWORD")), line
    ignored = (REPO_ROOT / ".dockerignore").read_text().splitlines()
    assert ".env" in ignored and ".venv" in ignored and "results/" in ignored
    volumes = next(line for line in dockerfile if line.startswith("VOLUME"))
    for path in ("/app/data", "/app/models", "/app/results", "/home/app/.cache/huggingface"):
        assert path in volumes


def test_the_vllm_backend_runs_in_its_own_environment():
    if (REPO_ROOT / ".env").exists():
        pytest.skip("a local .env adds --env-file to the command")
    docker = dry_run("evaluate/run_inference.sh", "--docker", "--model", "models/X", "--data", "d.csv",
                     "--backend", "vllm")
    assert docker == (f"{RUN} {VOLUMES} nli-finetune:latest /opt/vllm-venv/bin/python -m "
                      "evaluate.sample_model --model_id models/X --test_file d.csv --backend vllm")
    host = dry_run("run_inference.sh", "--local", "--model", "models/X", "--data", "d.csv", "--backend=vllm")
    python = ".venv-vllm/bin/python" if (REPO_ROOT / ".venv-vllm/bin/python").exists() else "python"
    assert host == f"{python} -m evaluate.sample_model --model_id models/X --test_file d.csv --backend=vllm"
    assert dry_run("run_inference.sh", "--local", "--model", "m", "--data", "d.csv").startswith("python -m")


def test_the_training_dry_run_prints_the_command_then_the_preflight_and_exits_with_its_status():
    args = ["--dry-run", "--local", "--gpus", "0,1", "--config", "ablation2.py", "--model_params_b", "7.25",
            "--train_data", "data/sample/sample_ft.jsonl", "--eval_data", "None"]
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    ready = subprocess.run(["bash", "run_training.sh", *args, "--gpu_memory_gb", "24"], cwd=REPO_ROOT,
                           capture_output=True, text=True, env=env)
    lines = ready.stdout.splitlines()
    assert ready.returncode == 0, ready.stdout + ready.stderr
    assert lines[0].startswith("env CUDA_VISIBLE_DEVICES=0,1 torchrun --standalone --nproc_per_node 2 -m train.train_sft")
    assert "effective batch: 32 = batch_size 8 x grad_accumulation_steps 2 x 2 process(es)" in ready.stdout
    small = subprocess.run(["bash", "run_training.sh", *args, "--gpu_memory_gb", "4"], cwd=REPO_ROOT,
                           capture_output=True, text=True, env=env)
    assert small.returncode == 1 and "does not fit 4.0 GiB" in small.stdout


def multi_node_dry_run(*args, mode="--local"):
    env = dict(os.environ, HF_HOME="/hf-cache", PREFLIGHT="0")
    return subprocess.run(["bash", "run_training.sh", "--dry-run", mode, *args], cwd=REPO_ROOT, capture_output=True,
                          text=True, env=env)


def test_a_multi_node_run_is_the_torchrun_command_torchrun_parses_for_each_rank():
    from torch.distributed.run import get_args_parser
    for rank in (0, 1):
        proc = multi_node_dry_run("--nnodes", "2", "--node_rank", str(rank), "--master_addr", "10.1.2.3",
                                  "--gpus", "0,1", "--config", "distributed.py")
        assert proc.returncode == 0, proc.stderr
        words = proc.stdout.split()
        assert words[:2] == ["env", "CUDA_VISIBLE_DEVICES=0,1"] and words[2] == "torchrun"
        parsed = get_args_parser().parse_args(words[3:])
        assert (parsed.nnodes, parsed.node_rank, parsed.master_addr, parsed.master_port, parsed.nproc_per_node) == \
            ("2", rank, "10.1.2.3", 29500, "2")
        assert parsed.module and parsed.training_script == "train.train_sft"
        assert parsed.training_script_args == ["--config", "distributed.py"]
    if (REPO_ROOT / ".env").exists():
        return
    docker = multi_node_dry_run("--nnodes", "2", "--node_rank", "1", "--master_addr", "10.1.2.3", "--master_port",
                                "29600", "--gpus", "0,1", "--config", "distributed.py", mode="--docker")
    assert docker.stdout.startswith(f"{RUN} --network host --gpus")  # rendezvous + NCCL on the host
    assert "--master_port 29600" in docker.stdout


def test_the_fsdp_recipe_on_node_1_of_2_is_torchrun_with_those_values():
    proc = multi_node_dry_run("--nnodes", "2", "--node_rank", "1", "--master_addr", "10.1.2.3", "--gpus", "0,1",
                              "--config", "distributed_fsdp.py")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0] == (
        "env CUDA_VISIBLE_DEVICES=0,1 torchrun --nnodes 2 --node_rank 1 --master_addr 10.1.2.3 --master_port 29500 "
        "--nproc_per_node 2 -m train.train_sft --config distributed_fsdp.py")


@pytest.mark.parametrize("args,message", [
    (["--nnodes", "2"], "needs --master_addr"),
    (["--nnodes", "2", "--node_rank", "2", "--master_addr", "h"], "must be below --nnodes 2"),
    (["--nnodes", "two", "--master_addr", "h"], "take whole numbers"),
])
def test_a_multi_node_run_that_cannot_meet_is_refused(args, message):
    proc = multi_node_dry_run(*args, "--config", "x.py")
    assert proc.returncode == 2 and message in proc.stderr
    serve = subprocess.run(["bash", "run_serve.sh", "--dry-run", "--local", "--model", "m", "--nnodes", "2"],
                           cwd=REPO_ROOT, capture_output=True, text=True)
    assert serve.returncode == 2 and "for run_training.sh" in serve.stderr


@pytest.mark.slow
def test_two_nodes_meet_on_loopback_and_train_as_one_ddp_run(tiny_mistral, tmp_path):
    """Two wrapper invocations, node ranks 0 and 1, one CPU process each, rendezvous on 127.0.0.1."""
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    out = tmp_path / "two-nodes"
    args = ["--local", "--nnodes", "2", "--master_addr", "127.0.0.1", "--master_port", port, "--config", "tiny_cpu.py",
            "--model_id", str(tiny_mistral), "--output_dir", str(out), "--train_data", "data/sample/sample_thoughts.jsonl",
            "--eval_data", "None", "--max_steps", "4", "--batch_size", "2", "--max_train_examples", "16",
            "--save_steps", "100"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PATH=f"{REPO_ROOT / '.venv/bin'}:{os.environ['PATH']}")
    nodes = [subprocess.Popen(["bash", "run_training.sh", *args[:1], *args[1:3], "--node_rank", str(rank), *args[3:]],
                              cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for rank in (0, 1)]
    logs = [node.communicate(timeout=600)[0] for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], logs[0][-2000:] + logs[1][-2000:]
    results = json.loads((out / "train_results.json").read_text())
    assert results["world_size"] == 2 and results["global_step"] == 4
    first, second = results["rank_param_checksums"]
    assert first == second and first != 0


@pytest.mark.parametrize("script", ["run_training.sh", "run_inference.sh", "evaluate/run_inference.sh", "run_serve.sh"])
def test_a_lone_number_after_gpus_is_refused_as_ambiguous(script):
    """Docker's `--gpus 2` is a count, ours a list of indices: `--gpus 2` is refused, `--gpu 2` is GPU 2."""
    for flag in (["--gpus", "2"], ["--gpus=2"]):
        proc = subprocess.run(["bash", script, "--dry-run", "--local", *flag, "--model", "m", "--config", "x.py"],
                              cwd=REPO_ROOT, capture_output=True, text=True, env=dict(os.environ, PREFLIGHT="0"))
        assert proc.returncode == 2 and "--gpus 2 is ambiguous" in proc.stderr and "--gpu 2" in proc.stderr
    single = subprocess.run(["bash", script, "--dry-run", "--local", "--gpu", "2", "--model", "m", "--data", "d.csv",
                             "--config", "x.py"], cwd=REPO_ROOT, capture_output=True, text=True,
                            env=dict(os.environ, PREFLIGHT="0"))
    assert "CUDA_VISIBLE_DEVICES=2 " in single.stdout, single.stderr


def test_docker_refuses_a_path_the_container_cannot_see(tmp_path):
    """Only data/, models/, results/ and train/configs/ are mounted: an outside path (absolute, or relative
    and existing here) is one line and exit 2 before Docker starts; mounted and container paths pass."""
    outside = tmp_path / "dev.csv"
    outside.write_text("premise,hypothesis,label\n")
    proc = subprocess.run(["bash", str(REPO_ROOT / "evaluate/run_inference.sh"), "--docker", "--dry-run",
                           "--model", "models/X", "--data", str(outside)], capture_output=True, text=True)
    assert proc.returncode == 2 and str(outside) in proc.stderr and "--local" in proc.stderr, proc.stderr
    assert proc.stdout == ""
    inside = dry_run("evaluate/run_inference.sh", "--docker", "--model", "models/X", "--data",
                     str(REPO_ROOT / "data/sample/dev_300.csv"))
    assert "data/sample/dev_300.csv" in inside
    assert "-v " + str(REPO_ROOT) + "/train/configs:/app/train/configs:ro" in inside


def wrapper_copy(root):
    """The wrappers in a folder of their own: their REPO_DIR is `root`, so a real (not dry) run creates its
    folders there, never in the checkout. A fake `docker` on PATH records its arguments and what it found."""
    for script in ("run_training.sh", "run_inference.sh", "run_serve.sh", "evaluate/run_inference.sh",
                   "scripts/wrapper_lib.sh"):
        (root / script).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO_ROOT / script, root / script)  # with its mode: run_inference.sh execs the other
    (root / "train" / "configs").mkdir(parents=True)
    bin_dir = root / "bin"
    bin_dir.mkdir()
    (bin_dir / "docker").write_text(f'#!/bin/sh\n[ "$1" = info ] && exit 0\nls -d "{root}/results" "{root}/models" '
                                    f'"{root}/data" > "{root}/mounts-seen"\necho "$@" > "{root}/docker-args"\n')
    (bin_dir / "docker").chmod(0o755)
    return dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", HF_HOME=str(root / "hf"), PREFLIGHT="0")


@pytest.mark.parametrize("script,args", [("run_training.sh", ["--config", "x.py"]),
                                         ("run_inference.sh", ["--model", "models/X", "--data", "data/d.csv"]),
                                         ("run_serve.sh", ["--model", "models/X"])])
def test_i41_the_container_runs_as_the_caller_and_its_mounts_exist_before_docker_runs(tmp_path, script, args):
    """On a fresh clone Docker created the missing results/ as root and the image's uid 1000 could not write
    it: the wrappers create every mounted folder first and run the container as the calling user."""
    env = wrapper_copy(tmp_path)
    proc = subprocess.run(["bash", str(tmp_path / script), "--docker", *args], capture_output=True, text=True,
                          env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert sorted((tmp_path / "mounts-seen").read_text().split()) == [str(tmp_path / d) for d in
                                                                      ("data", "models", "results")]
    assert (tmp_path / "hf").is_dir()  # the Hugging Face cache too
    assert f"--user {os.getuid()}:{os.getgid()} -e HOME=/tmp -e HF_HOME=/home/app/.cache/huggingface" \
        in (tmp_path / "docker-args").read_text()


def test_i41_a_mount_the_caller_cannot_write_is_one_line_before_docker_runs(tmp_path):
    env = wrapper_copy(tmp_path)
    (tmp_path / "results").write_text("")  # not a folder (a root-owned one reads the same to a non-root user)
    proc = subprocess.run(["bash", str(tmp_path / "run_training.sh"), "--docker", "--config", "x.py"],
                          capture_output=True, text=True, env=env, cwd=tmp_path)
    assert proc.returncode == 2 and not (tmp_path / "docker-args").exists()
    assert proc.stderr.count("\n") == 1 and f"error: {tmp_path / 'results'} is not writable" in proc.stderr
    assert f"sudo chown -R {os.getuid()}:{os.getgid()} {tmp_path / 'results'}" in proc.stderr


def test_i41_a_dry_run_prints_and_creates_nothing(tmp_path):
    env = wrapper_copy(tmp_path)
    proc = subprocess.run(["bash", str(tmp_path / "run_training.sh"), "--docker", "--dry-run", "--config", "x.py"],
                          capture_output=True, text=True, env=env, cwd=tmp_path)
    assert proc.returncode == 0 and proc.stdout.startswith(f"docker run --rm --ipc=host --user {os.getuid()}:")
    assert not any((tmp_path / d).exists() for d in ("results", "models", "data", "hf"))


def test_i41_make_gpu_check_in_the_image_runs_as_the_caller_with_its_mounts_made(tmp_path):
    env = wrapper_copy(tmp_path)
    shutil.copy(REPO_ROOT / "Makefile", tmp_path / "Makefile")
    proc = subprocess.run(["make", "--no-print-directory", "gpu-check", "IMAGE=nli-finetune:test",
                           "GPU_CHECK_ARGS=--only env"], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert sorted((tmp_path / "mounts-seen").read_text().split()) == [str(tmp_path / d) for d in
                                                                      ("data", "models", "results")]
    args = (tmp_path / "docker-args").read_text()
    assert args.startswith(f"run --rm --ipc=host --user {os.getuid()}:{os.getgid()} -e HOME=/tmp ")
    assert "--gpus all" in args and f"-v {tmp_path}/results:/app/results" in args
    assert args.rstrip().endswith("nli-finetune:test python scripts/gpu_check.py --only env")


def test_i41_nccl_settings_of_the_caller_reach_the_container():
    """Multi-GPU and multi-node runs need the caller's NCCL_SOCKET_IFNAME (a node with several NICs) and the
    like inside the container: passed by name (-e NAME), so the value never shows in a printed command."""
    if (REPO_ROOT / ".env").exists():
        pytest.skip("a local .env adds --env-file to the command")
    command = dry_run("run_training.sh", "--docker", "--config", "distributed.py", "--gpus", "0,1",
                      NCCL_SOCKET_IFNAME="eth7", NCCL_DEBUG="INFO", GLOO_SOCKET_IFNAME="eth7")
    assert f"{VOLUMES} -e GLOO_SOCKET_IFNAME -e NCCL_DEBUG -e NCCL_SOCKET_IFNAME nli-finetune:latest torchrun" in command
    assert "eth7" not in command
