# IPython configuration for the meshlab lessons, copied to <sys.prefix>/etc/ipython/ by
# `make lab`, `make test` and Binder's postBuild, so every kernel of the environment loads it
# (also after a restart): a cell run out of order says which cells to run first instead of
# showing a bare NameError traceback (meshlab.jupyter).
c = get_config()  # noqa: F821 (IPython defines it while reading this file)
c.InteractiveShellApp.extensions.append("meshlab.jupyter")
