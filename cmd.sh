# Job backends for data-parallel steps, as in ESPnet's cmd.sh.
#   cmd_backend=local : JOB=1:N array jobs run on this machine (at most max_jobs_run at once)
#   cmd_backend=slurm : one sbatch array job, waited for; set slurm_opts for partition etc.
cmd_backend=${cmd_backend:-local}
max_jobs_run=${max_jobs_run:-$(nproc)}
slurm_opts=${slurm_opts:-}

train_cmd="local/run_jobs.sh --backend ${cmd_backend} --max_jobs_run ${max_jobs_run}"
[ -n "${slurm_opts}" ] && train_cmd+=" --slurm_opts '${slurm_opts}'"
decode_cmd=${train_cmd}
