"""python -m dwcp_inference.contracts go > clients/go/inference/contract_gen.go"""

import sys

from .go import go_source

if sys.argv[1:] != ["go"]:
    print("usage: python -m dwcp_inference.contracts go > clients/go/inference/contract_gen.go", file=sys.stderr)
    sys.exit(2)
sys.stdout.write(go_source())
