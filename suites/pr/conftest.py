import sys
from pathlib import Path

# handcalc.py is a test-only oracle living beside the tests
sys.path.insert(0, str(Path(__file__).parent))
