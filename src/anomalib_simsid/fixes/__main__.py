"""Print the fixes table: ``python -m anomalib_simsid.fixes``."""

from anomalib_simsid.fixes import markdown_table

print(markdown_table())
