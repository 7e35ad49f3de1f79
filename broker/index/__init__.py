"""The multi-dispatch index: key layouts, the IndexStore boundary and its adapters."""
