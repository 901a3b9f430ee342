import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_quickstart_runs() -> None:
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / "quickstart.py")], capture_output=True, text=True, timeout=300, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert "tool result: 'exit code 0\\nstdout:\\n42\\n'" in proc.stdout
    assert "reward=1.0 terminated=True fraction=1.0" in proc.stdout
    assert "episodes          16" in proc.stdout
