# Job backends for data-parallel steps, as in ESPnet's cmd.sh.
#   cmd_backend=local : JOB=1:N array jobs run on this machine (at most max_jobs_run at once)
#   cmd_backend=slurm : one sbatch array job, waited for; SOFA_SLURM_OPTS holds extra sbatch
#                       options (partition, memory, time), e.g. "-p cpu --mem 8G"
cmd_backend=${cmd_backend:-local}
max_jobs_run=${max_jobs_run:-$(nproc)}
export SOFA_SLURM_OPTS=${SOFA_SLURM_OPTS:-}

train_cmd="run_jobs.sh --backend ${cmd_backend} --max_jobs_run ${max_jobs_run}"
decode_cmd=${train_cmd}
