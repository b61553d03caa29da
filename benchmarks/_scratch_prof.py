import cProfile, pstats, sys, time
import dagster as dg
from castai_focus_dagster.definitions import defs
job = defs.resolve_job_def("focus_export_job")
pr = cProfile.Profile()
with dg.DagsterInstance.ephemeral() as inst:
    pr.enable()
    r = job.execute_in_process(partition_key=sys.argv[1], instance=inst)
    pr.disable()
st = pstats.Stats(pr); st.sort_stats("cumulative").print_stats(60)
st.sort_stats("tottime").print_stats(30)
