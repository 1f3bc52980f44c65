"""local/run_jobs.sh: array jobs with one log each; a failing job fails the run visibly."""

from conftest import run_script


def test_array_job_runs_every_index_with_its_own_log(repo, tmp_path, shell_env):
    result = run_script([repo / "local/run_jobs.sh", "JOB=1:4", "log/echo.JOB.log", "bash", "-c", "echo part JOB > out.JOB"], tmp_path, shell_env, check=True)
    assert result.returncode == 0
    for index in range(1, 5):
        assert (tmp_path / f"out.{index}").read_text().strip() == f"part {index}"
        assert "with status 0" in (tmp_path / f"log/echo.{index}.log").read_text()


def test_failing_job_fails_the_run_and_shows_its_log(repo, tmp_path, shell_env):
    command = "echo output of JOB; if [ JOB -eq 2 ]; then echo broken input >&2; exit 3; fi"
    result = run_script([repo / "local/run_jobs.sh", "--max_jobs_run", "1", "JOB=1:3", "log/t.JOB.log", "bash", "-c", command], tmp_path, shell_env)
    assert result.returncode != 0
    assert "job 2 failed" in result.stderr and "log/t.2.log" in result.stderr
    assert "broken input" in result.stderr
    assert "job 1 failed" not in result.stderr and "job 3 failed" not in result.stderr
    assert (tmp_path / "log/t.3.log").exists()


def test_single_job_and_bad_usage(repo, tmp_path, shell_env):
    assert run_script([repo / "local/run_jobs.sh", "log/one.log", "true"], tmp_path, shell_env).returncode == 0
    no_index = run_script([repo / "local/run_jobs.sh", "JOB=1:2", "log/same.log", "true"], tmp_path, shell_env)
    assert no_index.returncode != 0 and "must contain JOB" in no_index.stderr
    backend = run_script([repo / "local/run_jobs.sh", "--backend", "pbs", "log/x.log", "true"], tmp_path, shell_env)
    assert backend.returncode != 0 and "supported: local, slurm" in backend.stderr


def test_slurm_backend_submits_one_array_job_and_reports_failures(repo, tmp_path, shell_env):
    """A stand-in sbatch runs the generated script once per array index, as slurm would."""
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "sbatch").write_text(
        "#!/usr/bin/env bash\n"
        "echo \"$@\" > sbatch.args\n"
        "range=$(printf '%s\\n' \"$@\" | sed -n 's/^--array=\\([0-9]*-[0-9]*\\).*/\\1/p')\n"
        "script=${@: -1}; status=0\n"
        "for i in $(seq ${range%-*} ${range#*-}); do SLURM_ARRAY_TASK_ID=$i bash \"$script\" || status=1; done\n"
        "exit $status\n"
    )
    (fake_bin / "sbatch").chmod(0o755)
    env = dict(shell_env, PATH=f"{fake_bin}:{shell_env['PATH']}", SOFA_SLURM_OPTS="-p cpu")
    command = ["bash", "-c", "echo task JOB > out.JOB; [ JOB -ne 3 ]"]
    result = run_script([repo / "local/run_jobs.sh", "--backend", "slurm", "JOB=1:3", "log/s.JOB.log", *command], tmp_path, env)
    assert result.returncode != 0 and "job 3 failed" in result.stderr and "job 1 failed" not in result.stderr
    assert [(tmp_path / f"out.{i}").read_text().strip() for i in (1, 2, 3)] == ["task 1", "task 2", "task 3"]
    assert "--array=1-3" in (tmp_path / "sbatch.args").read_text() and "-p cpu" in (tmp_path / "sbatch.args").read_text()
