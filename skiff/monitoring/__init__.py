"""Monitoring of served models: serving drift against the training data (:mod:`.drift`), the version's
reference (:mod:`.reference`), and the windowed run ``skiff monitor run`` does (:mod:`.runner`)."""
