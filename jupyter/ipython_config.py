# IPython configuration for the meshlab lessons, copied to <sys.prefix>/etc/ipython/ by
# `make lab`, `make test` and Binder's postBuild, so every kernel of the environment loads it
# (also after a restart): a cell run out of order says which cells to run first instead of
# showing a bare NameError traceback (meshlab.jupyter).
c = get_config()  # noqa: F821 (IPython defines it while reading this file)
c.InteractiveShellApp.extensions.append("meshlab.jupyter")
# Figures as SVG with their text kept as text: about three times faster to produce than a
# PNG (so each lesson runs in seconds), and sharp at any width the notebook shows them.
# The lessons' figures have fixed sizes and margins, so they are not cropped ("tight").
c.InlineBackend.figure_formats = {"svg"}
c.InlineBackend.rc = {"svg.fonttype": "none", "svg.hashsalt": "meshlab"}
# No date or creator in an SVG (its bytes are the same every run, as nbval compares them).
c.InlineBackend.print_figure_kwargs = {"bbox_inches": None,
                                      "metadata": {"Date": None, "Creator": None}}
