"""Run by test_two_processes_stay_in_sync under `accelerate launch --num_processes 2 --cpu`."""

import sys
from pathlib import Path

from accelerate import Accelerator
from diffusers import FlowMatchEulerDiscreteScheduler

from conftest import TOYWORLD, tiny_transformer, tiny_vae
from engine import loading
from engine.distill.config import DistillConfig
from engine.distill.trainer import train
from engine.events import Result
from engine.folder import ModelInfo, write_pipeline

acc = Accelerator(cpu=True)
root = Path(sys.argv[1])
folder = root / "tiny"
if acc.is_main_process:
    write_pipeline(folder, tiny_transformer(), tiny_vae(), FlowMatchEulerDiscreteScheduler(shift=3.0), ModelInfo(name="tiny"))
acc.wait_for_everyone()
loaded = loading.load(str(folder))
cfg = DistillConfig(method="vsd+cd+lrm", steps=2, batch=2, frames=3, size=32, checkpoint_every=2,
                    pool_capacity=16, fake_updates=1)
result = [e for e in train(cfg, loaded, root / "work", TOYWORLD, accelerator=acc) if isinstance(e, Result)][0].value
student = acc.unwrap_model(result.student_ddp)
checksum = sum(p.double().sum().item() for p in student.parameters())
data = result.pool.latents[: result.pool.size].double().sum().item()
print(f"rank {acc.process_index} {result.step} {checksum:.10f} {data:.6f}", flush=True)
