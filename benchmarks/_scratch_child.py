import resource, sys, time, json
t0=time.perf_counter()
import dagster as dg
from castai_focus_dagster.definitions import defs
t1=time.perf_counter()
job = defs.resolve_job_def("focus_export_job")
with dg.DagsterInstance.ephemeral() as inst:
    r = job.execute_in_process(partition_key=sys.argv[1], instance=inst)
t2=time.perf_counter()
print(json.dumps({"ok": r.success, "import": t1-t0, "run": t2-t1, "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss/1024}))
