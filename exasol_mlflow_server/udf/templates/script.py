# ---- settings (written by `exasol-mlflow-server udf`) ----
SETTINGS = {}
LIBRARY, API_VERSION = "SCHEMA.EMS_CLIENT", 1
# ---- end of settings ----
try:  # the client code: the library script, created by the same generated SQL
    EMS = exa.import_script(LIBRARY)
except ImportError as exc:
    raise RuntimeError(
        f"E-EMS-UDF-4: cannot load the client library {LIBRARY} ({exc}); create it with the "
        "library part of the SQL generated with this script"
    ) from None
if getattr(EMS, "API_VERSION", None) != API_VERSION:
    raise RuntimeError(
        f"E-EMS-UDF-4: the library {LIBRARY} has API version {getattr(EMS, 'API_VERSION', None)}"
        f", this script needs {API_VERSION}: re-create it from the SQL generated with the script"
    )
UDF = EMS.Udf(exa, SETTINGS)
run, cleanup = UDF.run, UDF.cleanup
