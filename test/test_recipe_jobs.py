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

