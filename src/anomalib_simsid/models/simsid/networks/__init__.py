"""The paper's networks: blocks, memories, in-painting, critic."""
