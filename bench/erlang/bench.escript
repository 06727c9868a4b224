#!/usr/bin/env escript
%% pyotp's Erlang/OTP reference: the same workloads as bench/workloads.py, written in Erlang.
%%
%% Usage: escript bench.escript Rounds Warmup workload=N ...
%%   workloads: cast call spawn ring_receive ring_genserver timers memory
%%   (ring sizes are laps of a 1000-process ring; memory is the number of idle servers)
%%
%% For each workload it runs Warmup untimed rounds then Rounds timed ones and prints
%%   RESULT <workload> <n> <ops_per_round> <seconds,seconds,...> [key=value ...]
%% which bench/workloads.py (run_erlang) parses. Every round checks its result (counts of
%% casts, pongs, DOWNs, laps, cancelled timers) and crashes the script if work is missing.
-mode(compile).
-behaviour(gen_server).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2]).

-define(RING, 1000).

main([R, W | Specs]) ->
    Rounds = list_to_integer(R),
    Warm = list_to_integer(W),
    io:format("INFO otp=~s erts=~s schedulers=~p~n",
              [erlang:system_info(otp_release), erlang:system_info(version),
               erlang:system_info(schedulers_online)]),
    lists:foreach(fun(Spec) ->
                          [Name, N] = string:split(Spec, "="),
                          bench(list_to_atom(Name), list_to_integer(N), Rounds, Warm)
                  end, Specs);
main(_) ->
    io:format("usage: escript bench.escript Rounds Warmup workload=N ...~n"),
    halt(2).

%% ---------------------------------------------------------------------------------------
%% gen_server callbacks: a counter (state: integer) and a ring member (state: next pid)

init(Arg) -> {ok, Arg}.

handle_cast(inc, N) -> {noreply, N + 1}.

handle_call(ping, _From, N) -> {reply, pong, N + 1};
handle_call(take, _From, N) -> {reply, N, 0}.

handle_info(-1, Next) -> Next ! -1, {stop, normal, Next};
handle_info(M, Next) -> Next ! M, {noreply, Next}.

%% ---------------------------------------------------------------------------------------
%% Workloads

bench(cast, N, Rounds, Warm) ->
    {ok, C} = gen_server:start(?MODULE, 0, []),
    Ts = timed(fun() ->
                       cast_loop(C, N),
                       N = gen_server:call(C, take, infinity)
               end, Rounds, Warm),
    gen_server:stop(C),
    report(cast, N, N, Ts, []);

bench(call, N, Rounds, Warm) ->
    {ok, C} = gen_server:start(?MODULE, 0, []),
    Ts = timed(fun() ->
                       N = call_loop(C, N, 0),
                       N = gen_server:call(C, take, infinity)
               end, Rounds, Warm),
    gen_server:stop(C),
    report(call, N, N, Ts, []);

bench(spawn, N, Rounds, Warm) ->
    Ts = timed(fun() ->
                       spawn_loop(N),
                       N = down_loop(N, 0)
               end, Rounds, Warm),
    report(spawn, N, N, Ts, []);

bench(ring_receive, Laps, Rounds, Warm) ->
    First = build_ring(fun(Next) -> spawn(fun() -> ring_node(Next) end) end),
    ring_bench(ring_receive, First, Laps, Rounds, Warm);

bench(ring_genserver, Laps, Rounds, Warm) ->
    First = build_ring(fun(Next) -> {ok, P} = gen_server:start(?MODULE, Next, []), P end),
    ring_bench(ring_genserver, First, Laps, Rounds, Warm);

bench(timers, N, Rounds, Warm) ->
    Ts = timed(fun() ->
                       N = timer_loop(self(), 0, N, 0),
                       receive t -> exit(cancelled_timer_delivered) after 0 -> ok end
               end, Rounds, Warm),
    report(timers, N, N, Ts, []);

bench(memory, K, Rounds, Warm) ->
    Held = put(held, []),
    undefined = Held,
    Ts = timed(fun() ->
                       kill_all(get(held)),
                       Ps = start_servers(K),
                       K = length([P || P <- Ps, is_process_alive(P)]),
                       put(held, Ps)
               end, Rounds, Warm),
    kill_all(get(held)),
    put(held, []),
    Warmup = start_servers(100),
    erlang:garbage_collect(),
    Before = erlang:memory(processes),
    Ps = start_servers(K),
    After = erlang:memory(processes),
    Info = lists:sum([element(2, process_info(P, memory)) || P <- Ps]) / K,
    kill_all(Ps),
    kill_all(Warmup),
    report(memory, K, K, Ts, [{bytes_per_process_vm, (After - Before) / K},
                              {bytes_per_process_info, Info}]);

bench(Other, _, _, _) ->
    io:format("ERROR unknown workload ~p~n", [Other]),
    halt(2).

cast_loop(_, 0) -> ok;
cast_loop(C, K) -> gen_server:cast(C, inc), cast_loop(C, K - 1).

call_loop(_, 0, Pongs) -> Pongs;
call_loop(C, K, Pongs) ->
    case gen_server:call(C, ping, infinity) of
        pong -> call_loop(C, K - 1, Pongs + 1);
        _ -> call_loop(C, K - 1, Pongs)
    end.

spawn_loop(0) -> ok;
spawn_loop(K) -> spawn_monitor(fun() -> ok end), spawn_loop(K - 1).

down_loop(0, Downs) -> Downs;
down_loop(K, Downs) ->
    receive
        {'DOWN', _, process, _, normal} -> down_loop(K - 1, Downs + 1);
        {'DOWN', _, process, _, _} -> down_loop(K - 1, Downs)
    end.

%% A ring of ?RING processes: the calling process (home) and ?RING - 1 members.
build_ring(Make) ->
    lists:foldl(fun(_, Next) -> Make(Next) end, self(), lists:seq(1, ?RING - 1)).

ring_node(Next) ->
    receive
        -1 -> Next ! -1;
        M -> Next ! M, ring_node(Next)
    end.

ring_bench(Name, First, Laps, Rounds, Warm) ->
    Ts = timed(fun() -> Laps = laps(First, 0, Laps, 0) end, Rounds, Warm),
    First ! -1,
    receive -1 -> ok end,
    report(Name, Laps, Laps * ?RING, Ts, []).

laps(_, Laps, Laps, Ok) -> Ok;
laps(First, Lap, Laps, Ok) ->
    First ! Lap,
    receive
        Lap -> laps(First, Lap + 1, Laps, Ok + 1);
        _ -> laps(First, Lap + 1, Laps, Ok)
    end.

timer_loop(_, N, N, Ok) -> Ok;
timer_loop(Me, I, N, Ok) ->
    T = erlang:send_after(1000 + (I rem 1000) * 10, Me, t),
    case erlang:cancel_timer(T) of
        false -> timer_loop(Me, I + 1, N, Ok);
        _ -> timer_loop(Me, I + 1, N, Ok + 1)
    end.

start_servers(K) -> [begin {ok, P} = gen_server:start(?MODULE, 0, []), P end || _ <- lists:seq(1, K)].

kill_all(Ps) ->
    Refs = [begin R = monitor(process, P), exit(P, kill), R end || P <- Ps],
    [receive {'DOWN', R, process, _, _} -> ok end || R <- Refs],
    ok.

%% ---------------------------------------------------------------------------------------
%% Timing and output

timed(Fun, Rounds, Warm) ->
    [Fun() || _ <- lists:seq(1, Warm)],
    [begin
         T0 = erlang:monotonic_time(),
         Fun(),
         T1 = erlang:monotonic_time(),
         erlang:convert_time_unit(T1 - T0, native, nanosecond) / 1.0e9
     end || _ <- lists:seq(1, Rounds)].

report(Name, N, Ops, Ts, Extra) ->
    Times = string:join([float_to_list(T, [{decimals, 9}, compact]) || T <- Ts], ","),
    Kv = [io_lib:format(" ~s=~.1f", [K, float(V)]) || {K, V} <- Extra],
    io:format("RESULT ~s ~w ~w ~s~s~n", [Name, N, Ops, Times, Kv]).
