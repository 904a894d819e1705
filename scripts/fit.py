"""Train a garbage classifier: `python scripts/fit.py --config configs/seed.yaml --data.root PATH`.

Every option can be overridden on the command line (`--help`, `--print_config`). Multi-GPU:
`--trainer.devices 4 --trainer.strategy ddp`; see the README for multi-node launches.
"""

from lit_garbage.training.cli import main

if __name__ == "__main__":
    main()
