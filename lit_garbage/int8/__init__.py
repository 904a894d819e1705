"""int8 in one place: weights on TFLite's int8 grid (`grid`), the fine-tune that puts a model there (`finetune`,
`lit-garbage int8-finetune`), and the converter's activation ranges and float prefix (`ranges`). Between training
and export: it trains with the training stage's model, and the exporter reads it (docs/int8.md)."""
