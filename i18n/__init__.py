"""The course's editions in other languages, built from the English lessons."""
