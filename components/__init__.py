"""KFP components of skiff: one folder per step (logic.py, component.py, Dockerfile, requirements.txt)."""
