%% Erlang side of bench/test_bench_dist.py (pyotp's distribution benchmarks).
%%
%% sink/0: registered as `sink`, counts messages; {done, From} -> From ! {count, N} and the
%%   count restarts; a gen_server call `ping` is answered `pong` (a raw loop that speaks the
%%   '$gen_call' protocol, so no module is needed on the caller's side).
%% driver/0: reads commands on stdin and prints "@@result Seconds" for each:
%%   oneway N Node   send N small messages {msg, I} to {sink, Node}, then wait for the count
%%   call N Node     N gen_server:call({sink, Node}, ping)
%%   paced N Node Ms the same with a pause of Ms milliseconds before each call
%%   big Node        send a 100 MB binary to {sink, Node}, then wait for the count
%%   distbench N Node  run distbench:run(Node, N) (the reference tool, when loaded) and print
%%                   its output on one "@@distbench ..." line
-module(distpeer).
-export([sink/0, driver/0]).

sink() ->
    register(sink, self()),
    io:format("@@ready ~s~n", [node()]),
    sink_loop(0).

sink_loop(N) ->
    receive
        {done, From} -> From ! {count, N}, sink_loop(0);
        {'$gen_call', {From, Tag}, ping} -> From ! {Tag, pong}, sink_loop(N);
        _ -> sink_loop(N + 1)
    end.

driver() ->
    io:format("@@ready ~s~n", [node()]),
    driver_loop().

driver_loop() ->
    case io:get_line("") of
        eof -> halt();
        Line ->
            case string:lexemes(string:trim(Line), " ") of
                ["oneway", N, Node] -> result(fun() -> oneway(list_to_integer(N), list_to_atom(Node)) end);
                ["call", N, Node] -> result(fun() -> calls(list_to_integer(N), list_to_atom(Node)) end);
                ["paced", N, Node, Ms] ->
                    result(fun() -> paced(list_to_integer(N), list_to_atom(Node), list_to_integer(Ms)) end);
                ["big", Node] -> result(fun() -> big(list_to_atom(Node)) end);
                ["distbench", N, Node] ->
                    Text = capture(fun() -> distbench:run(list_to_atom(Node), list_to_integer(N)) end),
                    io:format("@@distbench ~s~n", [lists:join(" | ", string:lexemes(Text, "\n"))]);
                ["quit"] -> halt();
                Other -> io:format("@@error ~p~n", [Other])
            end,
            driver_loop()
    end.

result(F) ->
    T0 = erlang:monotonic_time(),
    F(),
    Us = erlang:convert_time_unit(erlang:monotonic_time() - T0, native, microsecond),
    io:format("@@result ~f~n", [Us / 1.0e6]).

oneway(N, Node) ->
    Dest = {sink, Node},
    send_n(Dest, N),
    Dest ! {done, self()},
    receive {count, N} -> ok; {count, M} -> exit({lost_messages, N - M}) end.

send_n(_, 0) -> ok;
send_n(Dest, I) -> Dest ! {msg, I}, send_n(Dest, I - 1).

calls(0, _) -> ok;
calls(N, Node) -> pong = gen_server:call({sink, Node}, ping), calls(N - 1, Node).

paced(0, _, _) -> ok;
paced(N, Node, Ms) -> timer:sleep(Ms), pong = gen_server:call({sink, Node}, ping), paced(N - 1, Node, Ms).

big(Node) ->
    Bin = persistent_bin(),
    {sink, Node} ! Bin,
    {sink, Node} ! {done, self()},
    receive {count, 1} -> ok end.

persistent_bin() ->
    case get(bin) of
        undefined -> B = binary:copy(<<7>>, 100000000), put(bin, B), B;
        B -> B
    end.

%% Run F with a temporary group leader that collects what it prints.
capture(F) ->
    Old = group_leader(),
    Cap = spawn(fun() -> cap_loop([]) end),
    group_leader(Cap, self()),
    try F() after group_leader(Old, self()) end,
    Cap ! {get, self()},
    receive {captured, Text} -> Text end.

cap_loop(Acc) ->
    receive
        {io_request, From, ReplyAs, Req} ->
            From ! {io_reply, ReplyAs, ok},
            cap_loop([io_text(Req) | Acc]);
        {get, P} ->
            P ! {captured, lists:flatten(lists:reverse(Acc))}
    end.

io_text({put_chars, _Enc, M, F, A}) -> unicode:characters_to_list(apply(M, F, A));
io_text({put_chars, _Enc, Chars}) -> unicode:characters_to_list(Chars);
io_text({put_chars, Chars}) -> unicode:characters_to_list(Chars);
io_text(_) -> "".
