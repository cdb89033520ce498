"""Networks of the bundles: plain ``nn.Module`` classes, one per module (``common.networks.pnet``, ...)."""
