from jaxdl.main import run

run()
