# Job backends, as in ESPnet's cmd.sh. Stages run their steps as
#   ${train_cmd}  JOB=1:N log.JOB cmd   CPU jobs (data preparation, k-means, statistics)
#   ${cuda_cmd}   --gpu N [JOB=1:N] log cmd   jobs on N GPUs each (features, LM training, PTQ, decoding)
#   ${decode_cmd} CPU decoding jobs
# cmd_backend=local : jobs run on this machine, at most max_jobs_run at once; --gpu N hands each
#                     job N GPUs of its own (CUDA_VISIBLE_DEVICES) and refuses without them.
# cmd_backend=slurm : each call is one sbatch (array) job, waited for; conf/slurm.conf turns
#                     --gpu/--mem/--time/--num_threads/--num_nodes into sbatch options (partition,
#                     --gres=gpu:N, ...). slurm.pl is run_jobs.sh under the name espnet2.bin.launch
#                     expects for multi-node training (run.sh --num_nodes N: srun + DDP).
cmd_backend=${cmd_backend:-local}
max_jobs_run=${max_jobs_run:-$(nproc)}
slurm_conf=${slurm_conf:-conf/slurm.conf}

case "${cmd_backend}" in
    local) train_cmd="run_jobs.sh --backend local --max_jobs_run ${max_jobs_run}" ;;
    slurm) train_cmd="slurm.pl --config ${slurm_conf} --max_jobs_run ${max_jobs_run}" ;;
    *) echo "cmd.sh: unknown cmd_backend '${cmd_backend}' (supported: local, slurm)" >&2; return 1 ;;
esac
cuda_cmd=${train_cmd}
decode_cmd=${train_cmd}
