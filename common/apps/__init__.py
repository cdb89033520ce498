"""Method workflows, one sub-package per method (as ``monai.apps.<method>``)."""
