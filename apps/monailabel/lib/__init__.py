"""MONAI Label glue for the project's bundles: the registry of served bundles (``bundles``), their infer and train
tasks (``infer``, ``train``), LGG studies (``lgg``) and the server's start and stop (``server``). Nothing is imported
here, so that the tests and the benchmark can use ``lgg`` and ``server`` without importing MONAI Label itself."""
