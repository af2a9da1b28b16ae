"""Token-level data: FIM formats and transformation, packing, and the resumable stream."""
