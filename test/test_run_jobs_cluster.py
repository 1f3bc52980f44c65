"""local/run_jobs.sh resources: GPUs on the local backend, sbatch lines of the slurm backend
(conf/slurm.conf), and ESPnet's launcher driving both, with stand-in sbatch/srun on PATH."""

import sys

import pytest

from conftest import run_script

# Records its arguments, then runs the job script once per array index with its output where
# --output says, as slurm would.
FAKE_SBATCH = r"""#!/usr/bin/env bash
printf '%s\n' "$*" >> sbatch.calls
range=1-1; output=slurm.out
for arg in "$@"; do
    case "${arg}" in
        --array=*) range=${arg#--array=}; range=${range%%%*} ;;
        --output=*) output=${arg#--output=} ;;
    esac
done
script=${@: -1}; status=0
for i in $(seq "${range%-*}" "${range#*-}"); do
    SLURM_ARRAY_TASK_ID=$i bash "${script}" > "${output//%a/$i}" 2>&1 || status=1
done
exit ${status}
"""
FAKE_SRUN = '#!/usr/bin/env bash\necho "srun $*" >> srun.calls\n'


@pytest.fixture
def cluster(repo, tmp_path, shell_env):
    """A working dir with conf/slurm.conf and stand-in sbatch/srun first on PATH."""
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    for name, text in (("sbatch", FAKE_SBATCH), ("srun", FAKE_SRUN)):
        (fake_bin / name).write_text(text)
        (fake_bin / name).chmod(0o755)
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf/slurm.conf").write_text((repo / "conf/slurm.conf").read_text())
    env = dict(shell_env, PATH=f"{fake_bin}:{shell_env['PATH']}", TMPDIR=str(tmp_path))
    env.pop("CUDA_VISIBLE_DEVICES", None)
    return tmp_path, env


def test_slurm_backend_submits_one_array_job_with_the_options_of_slurm_conf(repo, cluster):
    cwd, env = cluster
    command = ["bash", "-c", "echo task JOB > out.JOB; [ JOB -ne 3 ]"]
    result = run_script([repo / "local/run_jobs.sh", "--backend", "slurm", "--max_jobs_run", "2", "--gpu", "1",
                         "--mem", "8G", "JOB=1:3", "log/s.JOB.log", *command], cwd, env)
    assert result.returncode != 0 and "job 3 failed" in result.stderr and "job 1 failed" not in result.stderr
    assert [(cwd / f"out.{i}").read_text().strip() for i in (1, 2, 3)] == ["task 1", "task 2", "task 3"]
    (call,) = (cwd / "sbatch.calls").read_text().splitlines()
    assert call == ("--export=ALL -p gpu --gres=gpu:1 -c 1 --mem-per-cpu 8G --time 24:00:00 --wait "
                    "--output=log/s.%a.log --array=1-3%2 log/.slurm_s.x.log.sh")
    log = (cwd / "log/s.2.log").read_text()
    assert "# JOB=2" in log and "with status 0" in log


def test_slurm_cpu_job_and_a_config_without_the_option(repo, cluster):
    cwd, env = cluster
    ok = run_script([repo / "local/slurm.pl", "--config", "conf/slurm.conf", "--name", "stats", "log/one.log",
                     "echo", "hello"], cwd, env, check=True)
    assert ok.returncode == 0 and "hello" in (cwd / "log/one.log").read_text()
    assert (cwd / "sbatch.calls").read_text().strip() == (
        "--export=ALL -p cpu --job-name stats --time 24:00:00 --wait --output=log/one.log log/.slurm_one.log.sh")
    (cwd / "bare.conf").write_text("command sbatch\ndefault gpu=0\noption gpu=0\n")
    missing = run_script([repo / "local/slurm.pl", "--config", "bare.conf", "--num_nodes", "2", "log/two.log", "true"],
                         cwd, env)
    assert missing.returncode != 0
    assert "bare.conf has no 'option num_nodes=2' or 'option num_nodes=*' line for --num_nodes 2" in missing.stderr
    absent = run_script([repo / "local/slurm.pl", "--config", "nope.conf", "log/x.log", "true"], cwd, env)
    assert absent.returncode != 0 and "--config nope.conf: file not found" in absent.stderr


def test_local_backend_gives_each_job_its_own_gpus(repo, cluster):
    cwd, env = cluster
    env = dict(env, CUDA_VISIBLE_DEVICES="3,5")
    # mkdir fails when another job holds the same GPU at the same time
    command = ["bash", "-c", "echo $CUDA_VISIBLE_DEVICES > gpu.JOB; mkdir busy.$CUDA_VISIBLE_DEVICES && sleep 0.3 && rmdir busy.$CUDA_VISIBLE_DEVICES"]
    run_script([repo / "local/run_jobs.sh", "--max_jobs_run", "4", "--gpu", "1", "JOB=1:4", "log/g.JOB.log", *command],
               cwd, env, check=True)
    assert {(cwd / f"gpu.{i}").read_text().strip() for i in range(1, 5)} == {"3", "5"}
    run_script([repo / "local/run_jobs.sh", "--gpu", "2", "log/two.log", "bash", "-c", "echo $CUDA_VISIBLE_DEVICES > both"],
               cwd, env, check=True)
    assert (cwd / "both").read_text().strip() == "3,5"


def test_local_backend_refuses_gpu_jobs_without_gpus(repo, cluster):
    cwd, env = cluster
    env = dict(env, CUDA_VISIBLE_DEVICES="")
    result = run_script([repo / "local/run_jobs.sh", "--gpu", "1", "JOB=1:2", "log/g.JOB.log", "touch", "ran.JOB"], cwd, env)
    assert result.returncode != 0
    assert "--gpu 1: each job needs 1 GPU(s) but this machine has 0 visible" in result.stderr
    assert "--ngpu 0" in result.stderr and not list(cwd.glob("ran.*"))
    nodes = run_script([repo / "local/run_jobs.sh", "--num_nodes", "2", "log/n.log", "true"], cwd, env)
    assert nodes.returncode != 0 and "multi-node jobs need the slurm backend" in nodes.stderr


def test_espnet_launcher_trains_on_several_nodes_through_srun(cluster):
    """espnet2.bin.launch picks srun for a cmd named slurm.pl; the job asks slurm for the nodes and GPUs."""
    cwd, env = cluster
    launch = [sys.executable, "-m", "espnet2.bin.launch", "--cmd", "slurm.pl --config conf/slurm.conf --name lm",
              "--log", "exp/lm/train.log", "--ngpu", "4", "--num_nodes", "2", "--init_file_prefix", "exp/lm/.dist_init_",
              "--multiprocessing_distributed", "true", "--", "python", "-m", "sofa_speechlm.bin.lm_train", "--config", "x.yaml"]
    run_script(launch, cwd, env, check=True)
    (sbatch,) = (cwd / "sbatch.calls").read_text().splitlines()
    assert "-p gpu --gres=gpu:4 -c 4" in sbatch and "--nodes 2" in sbatch and "--job-name lm" in sbatch
    (srun,) = (cwd / "srun.calls").read_text().splitlines()
    assert srun.startswith("srun --export=ALL python -m sofa_speechlm.bin.lm_train --config x.yaml --ngpu 4 "
                           "--multiprocessing_distributed true --dist_launcher slurm --dist_init_method file://")
    assert f"{cwd}/exp/lm/.dist_init_" in srun


def test_espnet_launcher_on_the_local_backend_refuses_gpus_it_does_not_have(cluster):
    cwd, env = cluster
    env = dict(env, CUDA_VISIBLE_DEVICES="")
    launch = [sys.executable, "-m", "espnet2.bin.launch", "--cmd", "run_jobs.sh --backend local", "--log", "train.log",
              "--ngpu", "1", "--", "python", "-c", "print('trained')"]
    result = run_script(launch, cwd, env)
    assert result.returncode != 0 and "--gpu 1: each job needs 1 GPU(s)" in result.stderr
