"""KFP components of skiff: one folder per step (logic.py, component.py); every step runs in an image of
the root Dockerfile (see components/_image.py)."""
