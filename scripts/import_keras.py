"""Import a Keras MobileNetV2 (the seed's model, or any alpha-1.0 MobileNetV2) into a GarbageClassifier checkpoint.

    python scripts/import_keras.py seed_model.keras --out model.ckpt --labels labels.txt

See `lit_garbage.models.keras_backbone` for the supported files and what is imported.
"""

from lit_garbage.training.keras_import import main

if __name__ == "__main__":
    raise SystemExit(main())
