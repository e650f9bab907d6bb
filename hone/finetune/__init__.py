"""Fine-tuning pretrained language models: LoRA adapters (`hone.finetune.lora`, the `[lora]`
table in `hone.finetune.settings`), adapters in PEFT's format (`hone.finetune.peft_format`),
instruction and chat data (`hone.finetune.chat_data`, `data.name = "chat"`) and packing
several examples into a training row (`hone.finetune.packing`).

Nothing is imported here: `hone.config` imports `hone.finetune.settings` to register the
`[lora]` table, and must not load torch by doing so; it imports `hone.finetune.chat_data`
with the data sets (which load torch anyway).
"""
