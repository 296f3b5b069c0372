"""A capture run for the scale tests (tests/lm/test_scale.py), run as its own process.

python stream_worker.py resume OUT CHECKPOINT [KILL_AT]   # stream_delta with checkpoints; SIGKILL itself at the
                                                         # KILL_AT-th batch (before absorbing it)
torchrun --standalone --nproc_per_node 2 stream_worker.py dist OUT   # stream_delta_distributed on gloo
"""

import os
import signal
import sys

import torch

from qkcore.lm import DeltaStreamer, PromptPairs, stream_delta, tiny_model

torch.set_num_threads(1)


def workload():
    """A tiny Llama, 13 prompts of token ids (uneven lengths) and their pairs: 7 batches of 2."""
    g = torch.Generator().manual_seed(0)
    prompts = [torch.randint(3, 128, (int(n),), generator=g).tolist() for n in torch.randint(6, 12, (13,), generator=g)]
    pairs = [PromptPairs(positive=[(-1, [0, 2])], negative=[(-1, [1, 3]), (-2, [0])]) for _ in prompts]
    return tiny_model("llama"), prompts, pairs


def main():
    mode, out = sys.argv[1], sys.argv[2]
    model, prompts, pairs = workload()
    if mode == "resume":
        checkpoint = sys.argv[3]
        kill_at = int(sys.argv[4]) if len(sys.argv) > 4 else None
        add, calls = DeltaStreamer.add, []

        def add_or_die(self, batch, batch_pairs):
            calls.append(1)
            if len(calls) == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)  # as a crash or an OOM kill would: no cleanup
            return add(self, batch, batch_pairs)

        DeltaStreamer.add = add_or_die
        st = stream_delta(model, None, prompts, pairs, batch_size=2, checkpoint=checkpoint, checkpoint_every=2)
        torch.save(
            {"delta": st.delta(), "pairs": st.acc.pairs, "prompts_seen": st.prompts_seen, "calls": len(calls)}, out
        )
    elif mode == "dist":
        import torch.distributed as dist

        from qkcore.lm.distributed import stream_delta_distributed

        dist.init_process_group("gloo")
        stream_delta_distributed(model, None, prompts, pairs, batch_size=2, out=out)
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
