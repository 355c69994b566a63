"""Run inside a private mount namespace whose $RUSHES_HOME/outputs is a tiny tmpfs (see
test_faults.test_disk_full_*): fill the disk, generate through the studio, then free space."""

import json
import sqlite3
import sys
from pathlib import Path

from gradio_client import Client

from engine import paths
from engine.session import Session
from studio.app import build, launch_kwargs

folder = sys.argv[1]
outputs = paths.outputs()
filler = outputs / "filler.bin"
with open(filler, "wb", buffering=0) as f:  # take every byte the tmpfs has
    try:
        while True:
            f.write(b"\0" * 1024)
    except OSError:
        pass
demo = build(Session("disk-full"), folder)
_, url, _ = demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=None, quiet=True,
                        **launch_kwargs())
client = Client(url, verbose=False)
args = [folder, "a red ball", "", "student 4 steps", 3, 5, 32, "", 1.0, False]
report = {}
try:
    client.predict(*args, api_name="/generate")
    report["full"] = "no error"
except Exception as err:  # gradio_client raises AppError with the gr.Error message
    report["full"] = str(err)
report["left_after_full"] = sorted(p.name for p in outputs.iterdir() if p != filler)
db = sqlite3.connect(paths.database())
report["integrity"] = db.execute("pragma integrity_check").fetchone()[0]
report["rows_after_full"] = db.execute("select count(*) from generations").fetchone()[0]
report["system"] = str(client.predict(api_name="/system"))[:80]  # still serving
filler.unlink()
out = client.predict(*args, api_name="/generate")
video = out[1]["video"] if isinstance(out[1], dict) else out[1]
report["after_free"] = Path(video).stat().st_size
report["rows_after_free"] = db.execute("select count(*) from generations").fetchone()[0]
report["files_after_free"] = sorted(p.suffix for p in outputs.iterdir())
demo.close()
print("REPORT " + json.dumps(report), flush=True)
