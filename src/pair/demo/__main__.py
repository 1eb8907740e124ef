"""``python -m pair.demo``: the consortium demo (hub + three sites), or one node (``--single``)."""

from pair.demo import main

main()
